// The public C ABI (include/processor.h). Nothing here may throw or abort: every failure becomes a
// return code and a message buffer.
#include "processor.h"

#include <chrono>
#include <cstdlib>
#include <exception>
#include <string>

#include "abi/embedded_python.h"
#include "abi/model_handle.h"
#include "common/logging.h"
#include "serving/metrics_exposition.h"
#include "serving/request_processor.h"

using processor::Log;
using processor::LogLevel;
using processor::ModelHandle;
using processor::Status;

namespace {

const Status kNoHandle = Status::Unavailable("model_buf is NULL: initialize() failed or was not called");

// Runs a request's bookkeeping (metrics, request log, timeline): an exception in it (std::bad_alloc)
// is logged and dropped, never unwinding into the host nor taking back the answer already made.
template <typename Step>
void Bookkeep(const char* what, Step&& step) noexcept {
  try {
    step();
  } catch (const std::exception& e) {
    try {
      Log(LogLevel::kError, std::string(what) + " failed: " + e.what());
    } catch (...) {
    }
  } catch (...) {
  }
}

}  // namespace

int processor::ServeOnHandle(void* model_buf, int format, RequestConstraints constraints, const void* input_data,
                             int input_size, void** output_data, int* output_size) {
  if (!model_buf) {
    if (!output_data || !output_size) return PROCESSOR_INTERNAL_ERROR;
    return processor::ReplyWithStatus(kNoHandle, output_data, output_size);
  }
  if (format != PROCESSOR_FORMAT_DEEPREC && format != PROCESSOR_FORMAT_TF_SERVING_PREDICT) {
    if (!output_data || !output_size) return PROCESSOR_INTERNAL_ERROR;
    return processor::ReplyWithStatus(Status::InvalidArgument("unknown request format " + std::to_string(format)),
                                      output_data, output_size);
  }
  auto* handle = static_cast<ModelHandle*>(model_buf);
  const auto started = std::chrono::steady_clock::now();
  int64_t step = 0;
  bool traced = false;
  Bookkeep("choosing the request to trace", [&] { traced = handle->timeline.ShouldTrace(&step); });
  std::string run_metadata;
  int code;
  {
    const processor::VersionManager::Hold hold(handle->versions);
    const processor::ServingVersion* version = hold.version();
    code = processor::ServeRequest(version ? version->servable.get() : nullptr, handle->limits(), input_data,
                                   input_size, output_data, output_size, traced ? &run_metadata : nullptr,
                                   static_cast<processor::RequestFormat>(format), version ? version->number : -1,
                                   {constraints.version, handle->model_name, constraints.strict_signature_name});
  }
  const auto elapsed = std::chrono::steady_clock::now() - started;
  Bookkeep("recording the request's metrics", [&] {
    handle->metrics.Record(code, std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count());
  });
  // The request log is a warmup file of DeepRec's requests: other formats are not written into it.
  if (code == PROCESSOR_OK && input_size > 0 && format == PROCESSOR_FORMAT_DEEPREC) {
    Bookkeep("logging the request", [&] { handle->request_log.Offer(input_data, static_cast<size_t>(input_size)); });
  }
  if (traced) {
    Bookkeep("writing the timeline", [&] {
      Status written = handle->timeline.Write(step, run_metadata);
      if (!written.ok()) Log(LogLevel::kError, written.message());
    });
  }
  return code;
}

extern "C" {

PROCESSOR_EXPORT void* initialize(const char* model_entry, const char* model_config, int* state) {
  void* handle = nullptr;
  Status status;
  try {
    if (!model_config) status = Status::InvalidArgument("model_config is NULL");
    else status = processor::StartControlPlane(model_entry ? model_entry : "", model_config, &handle);
  } catch (const std::exception& e) {
    status = Status::Internal(std::string("unexpected exception: ") + e.what());
  } catch (...) {
    status = Status::Internal("unexpected exception");
  }
  if (!status.ok()) {
    Log(LogLevel::kError, "initialize failed: " + status.message());
    handle = nullptr;
  }
  if (state) *state = handle ? 0 : -1;
  return handle;
}

PROCESSOR_EXPORT int process_as(void* model_buf, int format, const void* input_data, int input_size,
                                void** output_data, int* output_size) {
  return processor::ServeOnHandle(model_buf, format, {}, input_data, input_size, output_data, output_size);
}


PROCESSOR_EXPORT int process(void* model_buf, const void* input_data, int input_size, void** output_data,
                             int* output_size) {
  return process_as(model_buf, PROCESSOR_FORMAT_DEEPREC, input_data, input_size, output_data, output_size);
}

PROCESSOR_EXPORT int get_serving_model_info(void* model_buf, void** output_data, int* output_size) {
  if (!output_data || !output_size) return PROCESSOR_INTERNAL_ERROR;
  *output_data = nullptr;
  *output_size = 0;
  try {
    if (!model_buf) return processor::ReplyWithStatus(kNoHandle, output_data, output_size);
    const processor::VersionManager::Hold hold(static_cast<ModelHandle*>(model_buf)->versions);
    if (!hold.version()) {
      return processor::ReplyWithStatus(Status::Unavailable("no model version is ready to serve"), output_data, output_size);
    }
    processor::CopyToMallocBuffer(hold.version()->model_info, output_data, output_size);
    return PROCESSOR_OK;
  } catch (...) {
    return processor::ReplyWithStatus(Status::Internal("unexpected exception"), output_data, output_size);
  }
}

PROCESSOR_EXPORT int get_metrics(void* model_buf, void** output_data, int* output_size) {
  if (!output_data || !output_size) return PROCESSOR_INTERNAL_ERROR;
  *output_data = nullptr;
  *output_size = 0;
  try {
    if (!model_buf) return processor::ReplyWithStatus(kNoHandle, output_data, output_size);
    auto* handle = static_cast<ModelHandle*>(model_buf);
    std::string model_info;
    processor::TierReport tiers;
    std::string batching;
    {
      const processor::VersionManager::Hold hold(handle->versions);
      if (hold.version()) {
        model_info = hold.version()->model_info;
        tiers = hold.version()->servable->Tiers();
        if (const processor::BatchScheduler* batcher = hold.version()->servable->batcher()) {
          batching = processor::RenderBatchingMetrics(handle->model_name, batcher->Read());
        }
      }
    }
    processor::CopyToMallocBuffer(processor::RenderMetrics(handle->model_name, handle->metrics.Read(), model_info,
                                                           processor::Servable::LiveCount()) +
                                      processor::RenderTierMetrics(handle->model_name, tiers) + batching,
                                  output_data, output_size);
    return PROCESSOR_OK;
  } catch (...) {
    return processor::ReplyWithStatus(Status::Internal("unexpected exception"), output_data, output_size);
  }
}

PROCESSOR_EXPORT int rollback(void* model_buf, long long version) {
  if (!model_buf) return PROCESSOR_UNAVAILABLE;
  try {
    return processor::RollbackControlPlane(model_buf, version);
  } catch (...) {
    Log(LogLevel::kError, "rollback: unexpected exception");
    return PROCESSOR_INTERNAL_ERROR;
  }
}

PROCESSOR_EXPORT void free_buffer(void* buffer) { std::free(buffer); }

PROCESSOR_EXPORT void finalize(void* model_buf) {
  if (!model_buf) return;
  try {
    processor::StopControlPlane(model_buf);
  } catch (...) {
    Log(LogLevel::kError, "finalize: unexpected exception");
  }
}

}  // extern "C"
