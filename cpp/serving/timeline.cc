#include "serving/timeline.h"

#include <cstdio>
#include <vector>

#include "common/json_writer.h"
#include "common/wire_format.h"

namespace processor {
namespace {

// Field numbers: RunMetadata.step_stats = 1; StepStats.dev_stats = 1; DeviceStepStats.device = 1,
// node_stats = 2; NodeExecStats: node_name = 1, all_start_micros = 2, all_end_rel_micros = 5,
// timeline_label = 8, thread_id = 10, all_start_nanos = 13, all_end_rel_nanos = 16.
struct NodeStats {
  std::string_view name, label;
  int64_t start_micros = 0, end_rel_micros = 0, start_nanos = 0, end_rel_nanos = 0;
  uint64_t thread_id = 0;
};

NodeStats ParseNode(std::string_view bytes) {
  NodeStats node;
  wire::Reader r(bytes);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (wire_type == wire::kLengthDelimited && field == 1) node.name = r.LengthDelimited();
    else if (wire_type == wire::kLengthDelimited && field == 8) node.label = r.LengthDelimited();
    else if (wire_type == wire::kVarint && field == 2) node.start_micros = static_cast<int64_t>(r.Varint());
    else if (wire_type == wire::kVarint && field == 5) node.end_rel_micros = static_cast<int64_t>(r.Varint());
    else if (wire_type == wire::kVarint && field == 10) node.thread_id = r.Varint();
    else if (wire_type == wire::kVarint && field == 13) node.start_nanos = static_cast<int64_t>(r.Varint());
    else if (wire_type == wire::kVarint && field == 16) node.end_rel_nanos = static_cast<int64_t>(r.Varint());
    else r.Skip(wire_type);
  }
  return node;
}

// "name = MatMul(a, b)" -> "MatMul"; the op type TF's own timeline shows.
std::string_view OpType(std::string_view label, std::string_view fallback) {
  const size_t equals = label.find(" = ");
  if (equals == std::string_view::npos) return fallback;
  std::string_view rest = label.substr(equals + 3);
  return rest.substr(0, rest.find('('));
}

std::string Micros(int64_t nanos) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.3f", nanos / 1000.0);
  return buffer;
}

}  // namespace

std::string StepStatsToChromeTrace(std::string_view run_metadata) {
  std::string events;
  auto add = [&](const std::string& event) { events += (events.empty() ? "" : ",\n") + event; };
  wire::Reader metadata(run_metadata);
  uint32_t field, wire_type;
  int device_index = 0;
  while (metadata.NextField(&field, &wire_type)) {
    if (field != 1 || wire_type != wire::kLengthDelimited) {
      metadata.Skip(wire_type);
      continue;
    }
    wire::Reader step_stats(metadata.LengthDelimited());
    while (step_stats.NextField(&field, &wire_type)) {
      if (field != 1 || wire_type != wire::kLengthDelimited) {
        step_stats.Skip(wire_type);
        continue;
      }
      wire::Reader device(step_stats.LengthDelimited());
      const int pid = device_index++;
      while (device.NextField(&field, &wire_type)) {
        if (field == 1 && wire_type == wire::kLengthDelimited) {
          std::string event = "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":" + std::to_string(pid) + ",\"args\":{\"name\":";
          AppendJsonString(&event, device.LengthDelimited());
          add(event + "}}");
        } else if (field == 2 && wire_type == wire::kLengthDelimited) {
          const NodeStats node = ParseNode(device.LengthDelimited());
          const int64_t start = node.start_nanos ? node.start_nanos : node.start_micros * 1000;
          const int64_t duration = node.end_rel_nanos ? node.end_rel_nanos : node.end_rel_micros * 1000;
          std::string event = "{\"name\":";
          AppendJsonString(&event, OpType(node.label, node.name));
          event += ",\"cat\":\"Op\",\"ph\":\"X\",\"ts\":" + Micros(start) + ",\"dur\":" + Micros(duration) +
                   ",\"pid\":" + std::to_string(pid) + ",\"tid\":" + std::to_string(node.thread_id) + ",\"args\":{\"name\":";
          AppendJsonString(&event, node.name);
          event += ",\"op\":";
          AppendJsonString(&event, OpType(node.label, node.name));
          add(event + "}}");
        } else {
          device.Skip(wire_type);
        }
      }
    }
  }
  return "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n" + events + "\n]}\n";
}

void Timeline::Configure(int64_t start, int64_t interval, int64_t count, std::string path) {
  start_ = start;
  interval_ = interval > 0 ? interval : 1;
  count_ = count;
  path_ = std::move(path);
  enabled_.store(count > 0 && !path_.empty(), std::memory_order_release);
}

bool Timeline::ShouldTrace(int64_t* step) {
  if (!enabled_.load(std::memory_order_relaxed)) return false;
  *step = next_step_.fetch_add(1, std::memory_order_relaxed);
  if (*step < start_ || (*step - start_) % interval_ != 0) return false;
  return (*step - start_) / interval_ < count_;
}

// Written beside its name and renamed into place: whoever watches the directory (an uploader, a
// user's tail) sees whole files only.
Status Timeline::Write(int64_t step, std::string_view run_metadata) const {
  const std::string file = path_ + "/timeline-" + std::to_string(step) + ".json";
  const std::string partial = file + ".partial";
  const std::string json = StepStatsToChromeTrace(run_metadata);
  std::FILE* out = std::fopen(partial.c_str(), "wb");
  if (!out) return Status::Internal("cannot write timeline " + file);
  const bool written = std::fwrite(json.data(), 1, json.size(), out) == json.size();
  if (std::fclose(out) != 0 || !written || std::rename(partial.c_str(), file.c_str()) != 0) {
    std::remove(partial.c_str());
    return Status::Internal("cannot write timeline " + file);
  }
  return Status::Ok();
}

}  // namespace processor
