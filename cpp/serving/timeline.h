// Timeline: chosen requests run with full tracing and are written as Chrome trace JSON
// (chrome://tracing and Perfetto open them directly).
//
// Steps count the requests of a model from 0. With start S, interval I and count C, steps S, S+I, ...
// (C of them) are traced into <path>/timeline-<step>.json. Untraced requests pay one relaxed load.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace processor {

class Timeline {
 public:
  void Configure(int64_t start, int64_t interval, int64_t count, std::string path);

  // Whether the request now starting is to be traced; counts the step when a timeline is configured.
  bool ShouldTrace(int64_t* step);

  // Writes a serialized RunMetadata's step stats as Chrome trace JSON for `step`.
  Status Write(int64_t step, std::string_view run_metadata) const;

 private:
  std::atomic<bool> enabled_{false};
  std::atomic<int64_t> next_step_{0};
  int64_t start_ = 0, interval_ = 1, count_ = 0;
  std::string path_;
};

// Chrome trace JSON ("traceEvents") from a serialized tensorflow.RunMetadata.
std::string StepStatsToChromeTrace(std::string_view run_metadata);

}  // namespace processor
