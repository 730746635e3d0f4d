#include "model/session_settings.h"

#include "common/wire_format.h"

namespace processor {
namespace {
// Field numbers of tensorflow/core/protobuf/config.proto ConfigProto.
enum : uint32_t { kIntraOpThreads = 2, kInterOpThreads = 5, kUsePerSessionThreads = 9 };
}  // namespace

std::string EncodeConfigProto(const SessionSettings& settings) {
  wire::StringWriter w;
  if (settings.intra_op_threads > 0) w.Varint(kIntraOpThreads, settings.intra_op_threads);
  if (settings.inline_execute) {
    w.Varint(kInterOpThreads, static_cast<uint64_t>(int64_t{-1}));  // int32 -1, sign-extended on the wire
  } else if (settings.inter_op_threads > 0) {
    w.Varint(kInterOpThreads, settings.inter_op_threads);
  }
  if (settings.use_per_session_threads) w.Varint(kUsePerSessionThreads, 1);
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
