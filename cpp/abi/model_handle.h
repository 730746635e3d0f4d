// The object behind the ABI's opaque `void* model_buf`.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "serving/request_log.h"
#include "serving/request_metrics.h"
#include "serving/request_processor.h"
#include "serving/timeline.h"
#include "serving/version_manager.h"

namespace processor {

struct ModelHandle {
  // Tells a real handle from a stray pointer in debug checks and post-mortems.
  static constexpr unsigned kMagic = 0x50524f43;  // "PROC"
  unsigned magic = kMagic;
  std::string model_name;  // the model_name label of the metrics
  VersionManager versions;
  RequestMetrics metrics;
  Timeline timeline;
  RequestLog request_log;
  // Set by the control plane before the handle serves; atomics because a host may call process() on
  // another thread at any time.
  std::atomic<int64_t> max_request_bytes{RequestLimits::kDefaultMaxRequestBytes};
  std::atomic<int64_t> max_tensor_elements{RequestLimits::kDefaultMaxTensorElements};

  RequestLimits limits() const {
    return {max_request_bytes.load(std::memory_order_relaxed), max_tensor_elements.load(std::memory_order_relaxed)};
  }
};

// process_as() on `handle`, with the host's `constraints` (request_processor.h) checked on the version
// that runs it, under the same hold as the run (processor_control_process_version); their model_name is
// the handle's.
int ServeOnHandle(void* handle, int format, RequestConstraints constraints, const void* input_data, int input_size,
                  void** output_data, int* output_size);

}  // namespace processor
