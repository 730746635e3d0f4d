#include "serving/metrics_exposition.h"

#include <cstdint>

#include "common/wire_format.h"

namespace processor {
namespace {

// The ServingModelInfo fields the metrics report (field numbers of protos/predict.proto).
struct ModelInfoFields {
  bool present = false;
  int64_t version_step = -1, load_duration_ms = 0, updates_applied = 0, updates_failed = 0;
  int64_t delta_step = -1, savedmodel_version = -1;
  bool pinned = false;
};

ModelInfoFields ParseModelInfo(std::string_view bytes) {
  ModelInfoFields info;
  info.present = !bytes.empty();
  wire::Reader r(bytes);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (wire_type != wire::kVarint) {
      r.Skip(wire_type);
      continue;
    }
    const int64_t value = static_cast<int64_t>(r.Varint());
    switch (field) {
      case 4: info.version_step = value; break;
      case 6: info.load_duration_ms = value; break;
      case 7: info.updates_applied = value; break;
      case 8: info.updates_failed = value; break;
      case 9: info.delta_step = value; break;
      case 10: info.savedmodel_version = value; break;
      case 11: info.pinned = value != 0; break;
      default: break;
    }
  }
  return info;
}

// Label values escape backslash, quote and newline (exposition format 0.0.4).
std::string Label(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\', out += c;
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void Metric(std::string* out, const char* name, const char* type, const char* help) {
  *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

std::string RenderMetrics(const std::string& model_name, const RequestMetrics::Snapshot& requests,
                          std::string_view model_info, int64_t loaded_versions) {
  const std::string model = "model_name=\"" + Label(model_name) + "\"";
  std::string out;
  Metric(&out, ":tensorflow:serving:request_count", "counter", "Requests served, by status.");
  for (int i = 0; i < RequestMetrics::kStatuses; ++i) {
    out += ":tensorflow:serving:request_count{" + model + ",status=\"" + RequestMetrics::StatusName(i) + "\"} " +
           std::to_string(requests.count_by_status[i]) + "\n";
  }
  Metric(&out, ":tensorflow:serving:request_latency", "histogram", "Request latency in microseconds.");
  const std::string labels = model + ",API=\"predict\",entrypoint=\"process\"";
  uint64_t cumulative = 0;
  for (int i = 0; i < RequestMetrics::kBuckets; ++i) {
    cumulative += requests.buckets[i];
    out += ":tensorflow:serving:request_latency_bucket{" + labels + ",le=\"" +
           std::to_string(RequestMetrics::BucketBound(i)) + "\"} " + std::to_string(cumulative) + "\n";
  }
  cumulative += requests.buckets[RequestMetrics::kBuckets];
  out += ":tensorflow:serving:request_latency_bucket{" + labels + ",le=\"+Inf\"} " + std::to_string(cumulative) + "\n";
  out += ":tensorflow:serving:request_latency_sum{" + labels + "} " + std::to_string(requests.latency_sum_us) + "\n";
  out += ":tensorflow:serving:request_latency_count{" + labels + "} " + std::to_string(cumulative) + "\n";

  Metric(&out, ":processor:loaded_versions", "gauge",
         "Model versions loaded in this process, all models: two while a swap waits for requests on the old one; "
         "more for longer would be a leak.");
  out += ":processor:loaded_versions " + std::to_string(loaded_versions) + "\n";

  const ModelInfoFields info = ParseModelInfo(model_info);
  Metric(&out, ":tensorflow:serving:model_ready", "gauge", "1 while a model version serves.");
  out += ":tensorflow:serving:model_ready{" + model + "} " + (info.present ? "1" : "0") + "\n";
  if (!info.present) return out;
  Metric(&out, ":tensorflow:serving:model_version", "gauge", "Global step of the serving checkpoint (-1: none).");
  out += ":tensorflow:serving:model_version{" + model + "} " + std::to_string(info.version_step) + "\n";
  Metric(&out, ":tensorflow:serving:model_delta_step", "gauge", "Step of the newest delta applied (-1: none).");
  out += ":tensorflow:serving:model_delta_step{" + model + "} " + std::to_string(info.delta_step) + "\n";
  Metric(&out, ":tensorflow:serving:savedmodel_version", "gauge", "Serving SavedModel version (-1: unversioned).");
  out += ":tensorflow:serving:savedmodel_version{" + model + "} " + std::to_string(info.savedmodel_version) + "\n";
  Metric(&out, ":tensorflow:serving:model_pinned", "gauge", "1 while a rollback pins the serving version.");
  out += ":tensorflow:serving:model_pinned{" + model + "} " + (info.pinned ? "1" : "0") + "\n";
  Metric(&out, ":tensorflow:serving:load_latency", "gauge", "Microseconds the serving version took to load.");
  out += ":tensorflow:serving:load_latency{" + model + "} " + std::to_string(info.load_duration_ms * 1000) + "\n";
  Metric(&out, ":tensorflow:serving:load_count", "counter", "Model versions and deltas loaded, by outcome.");
  out += ":tensorflow:serving:load_count{" + model + ",status=\"success\"} " + std::to_string(info.updates_applied + 1) + "\n";
  out += ":tensorflow:serving:load_count{" + model + ",status=\"failure\"} " + std::to_string(info.updates_failed) + "\n";
  return out;
}

std::string RenderTierMetrics(const std::string& model_name, const TierReport& tiers) {
  if (tiers.tables.empty()) return "";
  const std::string model = "model_name=\"" + Label(model_name) + "\"";
  std::string out;
  auto each = [&](const char* name, const char* type, const char* help, auto line) {
    Metric(&out, name, type, help);
    for (const auto& [table, c] : tiers.tables) line(name, model + ",table=\"" + Label(table) + "\"", c);
  };
  each(":processor:feature_store_tier_lookups", "counter",
       "Ids looked up in a table with a DRAM tier (two local tiers, or Redis's hot-row cache), by where they "
       "were found (absent: the default row).",
       [&](const char* name, const std::string& labels, const TierCounters& c) {
         out += std::string(name) + "{" + labels + ",tier=\"dram\"} " + std::to_string(c.dram_hits) + "\n";
         out += std::string(name) + "{" + labels + ",tier=\"" + c.store + "\"} " + std::to_string(c.disk_hits) + "\n";
         out += std::string(name) + "{" + labels + ",tier=\"absent\"} " + std::to_string(c.absent) + "\n";
       });
  each(":processor:feature_store_tier_bytes", "gauge",
       "Bytes of each tier: the DRAM tier's allocation (its budget) and the disk tier's files.",
       [&](const char* name, const std::string& labels, const TierCounters& c) {
         out += std::string(name) + "{" + labels + ",tier=\"dram\"} " + std::to_string(c.dram_bytes) + "\n";
         if (std::string(c.store) == "disk") {
           out += std::string(name) + "{" + labels + ",tier=\"disk\"} " + std::to_string(c.disk_bytes) + "\n";
         }
       });
  each(":processor:feature_store_tier_dram_rows", "gauge", "Rows the DRAM tier holds.",
       [&](const char* name, const std::string& labels, const TierCounters& c) {
         out += std::string(name) + "{" + labels + "} " + std::to_string(c.dram_rows) + "\n";
       });
  each(":processor:feature_store_tier_evictions", "counter", "Rows the DRAM tier let go for more frequent ones.",
       [&](const char* name, const std::string& labels, const TierCounters& c) {
         out += std::string(name) + "{" + labels + "} " + std::to_string(c.evictions) + "\n";
       });
  each(":processor:feature_store_tier_rejections", "counter",
       "Rows read from disk that the DRAM tier did not admit (less frequent than the row they would evict).",
       [&](const char* name, const std::string& labels, const TierCounters& c) {
         out += std::string(name) + "{" + labels + "} " + std::to_string(c.rejections) + "\n";
       });
  return out;
}

std::string RenderBatchingMetrics(const std::string& model_name, const BatchScheduler::Stats& b) {
  const std::string model = "model_name=\"" + Label(model_name) + "\"";
  std::string out;
  // A Prometheus histogram of `counts` (non-cumulative, bucket i's bound first_bound << i, the last +Inf).
  auto histogram = [&](const char* name, const char* help, const auto& counts, uint64_t first_bound, uint64_t sum) {
    Metric(&out, name, "histogram", help);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < counts.size(); ++i) {
      cumulative += counts[i];
      const std::string bound = i + 1 < counts.size() ? std::to_string(first_bound << i) : "+Inf";
      out += std::string(name) + "_bucket{" + model + ",le=\"" + bound + "\"} " + std::to_string(cumulative) + "\n";
    }
    out += std::string(name) + "_sum{" + model + "} " + std::to_string(sum) + "\n";
    out += std::string(name) + "_count{" + model + "} " + std::to_string(cumulative) + "\n";
  };
  histogram(":processor:batch_size", "Rows of each run the batching formed (a request alone included).", b.batch_rows,
            1, b.rows_sum);
  histogram(":processor:batch_queuing_delay_microseconds",
            "How long each batched request waited for its run (0 when a run slot was free).", b.queue_delay_us, 10,
            b.queue_delay_sum_us);
  Metric(&out, ":processor:batch_runs", "counter", "Runs of the batching: all, and those that merged requests.");
  out += ":processor:batch_runs{" + model + ",kind=\"all\"} " + std::to_string(b.runs) + "\n";
  out += ":processor:batch_runs{" + model + ",kind=\"merged\"} " + std::to_string(b.merged_runs) + "\n";
  Metric(&out, ":processor:batch_queued_rows", "gauge", "Rows of requests waiting for a run now.");
  out += ":processor:batch_queued_rows{" + model + "} " + std::to_string(b.queued_rows) + "\n";
  Metric(&out, ":processor:batch_rejections", "counter", "Requests answered 503 because the batching queue was full.");
  out += ":processor:batch_rejections{" + model + "} " + std::to_string(b.rejected) + "\n";
  Metric(&out, ":processor:batch_reruns", "counter",
         "Requests run again alone after the merged run they were in failed (one member's data, most likely).");
  out += ":processor:batch_reruns{" + model + "} " + std::to_string(b.reruns) + "\n";
  return out;
}

}  // namespace processor
