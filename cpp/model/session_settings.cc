#include "model/session_settings.h"

#include "common/wire_format.h"

namespace processor {
namespace {
// Field numbers of tensorflow/core/protobuf/config.proto.
enum : uint32_t { kIntraOpThreads = 2, kUsePerSessionThreads = 9, kSessionInterOpThreadPool = 12 };  // ConfigProto
enum : uint32_t { kPoolNumThreads = 1, kPoolGlobalName = 2 };  // ThreadPoolOptionProto
enum : uint32_t { kRunTraceLevel = 1, kRunInterOpThreadPool = 3 };  // RunOptions
constexpr int kFullTrace = 3;                                          // RunOptions.TraceLevel

std::string ThreadPool(int threads, const std::string& global_name) {
  wire::StringWriter pool;
  if (threads > 0) pool.Varint(kPoolNumThreads, threads);
  if (!global_name.empty()) pool.Bytes(kPoolGlobalName, global_name);
  return pool.str();
}
}  // namespace

std::string EncodeConfigProto(const SessionSettings& settings) {
  wire::StringWriter w;
  if (settings.intra_op_parallelism_threads > 0) w.Varint(kIntraOpThreads, settings.intra_op_parallelism_threads);
  if (settings.use_per_session_threads) w.Varint(kUsePerSessionThreads, 1);
  // An unnamed pool belongs to the session; a named one is shared by every session naming it, and TF
  // fixes its size at creation: the size is in the name, so sessions configured alike share threads.
  for (int i = 0; i < settings.session_num; ++i) {
    const std::string serving = "processor_serving_" + std::to_string(settings.inter_op_parallelism_threads) + "_" + std::to_string(i);
    w.Bytes(kSessionInterOpThreadPool,
            ThreadPool(settings.inter_op_parallelism_threads, settings.use_per_session_threads ? "" : serving));
  }
  w.Bytes(kSessionInterOpThreadPool, ThreadPool(settings.model_update_inter_threads,
                                                "processor_update_" + std::to_string(settings.model_update_inter_threads)));
  return w.str();
}

std::string EncodeRunOptions(int pool, bool full_trace) {
  wire::StringWriter w;
  if (full_trace) w.Varint(kRunTraceLevel, kFullTrace);
  w.Varint(kRunInterOpThreadPool, static_cast<uint64_t>(static_cast<int64_t>(pool)));  // int32: -1 sign-extends
  return w.str();
}

Status MakeSessionOptions(const SessionSettings& settings, SessionOptionsPtr* options) {
  SessionOptionsPtr result(TF_NewSessionOptions());
  const std::string config = EncodeConfigProto(settings);
  if (!config.empty()) {
    TfStatus status;
    TF_SetConfig(result.get(), config.data(), config.size(), status.get());
    if (!status.ok()) return Status::Internal("session config rejected by TensorFlow: " + status.message());
  }
  *options = std::move(result);
  return Status::Ok();
}

}  // namespace processor
