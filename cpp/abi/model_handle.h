// The object behind the ABI's opaque `void* model_buf`.
#pragma once

#include <string>

#include "serving/request_metrics.h"
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
};

}  // namespace processor
