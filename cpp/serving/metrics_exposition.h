// Prometheus text exposition of a model's metrics, with TensorFlow Serving's metric names.
#pragma once

#include <string>
#include <string_view>

#include "serving/request_metrics.h"

namespace processor {

// `model_info`: the serving version's serialized ServingModelInfo ("" when none serves).
std::string RenderMetrics(const std::string& model_name, const RequestMetrics::Snapshot& requests,
                          std::string_view model_info);

}  // namespace processor
