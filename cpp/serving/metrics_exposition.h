// Prometheus text exposition of a model's metrics, with TensorFlow Serving's metric names.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "batching/batch_scheduler.h"
#include "feature_store/tiered_table.h"
#include "serving/request_metrics.h"

namespace processor {

// `model_info`: the serving version's serialized ServingModelInfo ("" when none serves);
// `loaded_versions`: the model versions loaded in the process, all models together.
std::string RenderMetrics(const std::string& model_name, const RequestMetrics::Snapshot& requests,
                          std::string_view model_info, int64_t loaded_versions);

// The serving version's tables in two tiers (nothing when it has none).
std::string RenderTierMetrics(const std::string& model_name, const TierReport& tiers);

// The serving version's batching (nothing when it is off).
std::string RenderBatchingMetrics(const std::string& model_name, const BatchScheduler::Stats& batching);

}  // namespace processor
