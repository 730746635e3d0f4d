// The control plane's private C API (abi/control_api.h).
#include "abi/control_api.h"

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <string>

#include "abi/model_handle.h"
#include "model/meta_graph.h"
#include "serving/request_processor.h"

using processor::ModelHandle;
using processor::Servable;
using processor::Status;

struct processor_servable {
  std::shared_ptr<Servable> servable;
};

namespace {

Status ParseInt(const std::string& key, const std::string& text, int* value) {
  errno = 0;
  char* end = nullptr;
  const long parsed = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno || parsed < INT32_MIN || parsed > INT32_MAX) {
    return Status::InvalidArgument("load option '" + key + "' is not an integer: '" + text + "'");
  }
  *value = static_cast<int>(parsed);
  return Status::Ok();
}

Status ParseInt64(const std::string& key, const std::string& text, int64_t* value) {
  errno = 0;
  char* end = nullptr;
  const long long parsed = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno) return Status::InvalidArgument("load option '" + key + "' is not an integer: '" + text + "'");
  *value = parsed;
  return Status::Ok();
}

Status ParseFloat(const std::string& key, const std::string& text, float* value) {
  errno = 0;
  char* end = nullptr;
  const float parsed = std::strtof(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno) return Status::InvalidArgument("load option '" + key + "' is not a number: '" + text + "'");
  *value = parsed;
  return Status::Ok();
}

std::vector<std::string> SplitCommas(const std::string& text) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    const size_t end = comma == std::string::npos ? text.size() : comma;
    if (end > start) parts.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

// "monolith:<variable>": the shards (one path per line) of the Monolith dump that is its table.
constexpr char kMonolithPrefix[] = "monolith:";

std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

Status ParseLoadOptions(const char* const* keys, const char* const* values, int count,
                        processor::LoadOptions* options) {
  for (int i = 0; i < count; ++i) {
    const std::string key = keys[i] ? keys[i] : "";
    const std::string value = values[i] ? values[i] : "";
    if (key == "savedmodel_dir") options->savedmodel_dir = value;
    else if (key == "signature_name") options->signature_name = value;
    else if (key == "tags") options->tags = SplitCommas(value);
    else if (key == "checkpoint_prefix") options->checkpoint_prefix = value;
    else if (key == "intra_op_threads") PROCESSOR_RETURN_IF_ERROR(ParseInt(key, value, &options->session.intra_op_threads));
    else if (key == "inter_op_threads") PROCESSOR_RETURN_IF_ERROR(ParseInt(key, value, &options->session.inter_op_threads));
    else if (key == "use_per_session_threads") options->session.use_per_session_threads = value == "1";
    else if (key == "inline_execute") options->session.inline_execute = value == "1";
    else if (key == "update_inter_op_threads") PROCESSOR_RETURN_IF_ERROR(ParseInt(key, value, &options->session.update_inter_op_threads));
    else if (key == "session_num") PROCESSOR_RETURN_IF_ERROR(ParseInt(key, value, &options->session.session_num));
    else if (key == "select_session_policy") {
      if (value != "MOD" && value != "RR") return Status::InvalidArgument("load option 'select_session_policy' is '" + value + "', not MOD or RR");
      options->session.policy = value == "RR" ? processor::SessionPolicy::kRoundRobin : processor::SessionPolicy::kMod;
    }
    else if (key == "feature_store") options->feature_store.type = value;
    else if (key == "embedding_names") options->feature_store.selection.names = SplitCommas(value);
    else if (key == "embedding_min_rows") PROCESSOR_RETURN_IF_ERROR(ParseInt64(key, value, &options->feature_store.selection.min_rows));
    else if (key == "embedding_default_value") PROCESSOR_RETURN_IF_ERROR(ParseFloat(key, value, &options->feature_store.selection.default_value));
    else if (key == "redis_url") PROCESSOR_RETURN_IF_ERROR(processor::ParseRedisUrl(value, &options->feature_store.redis.seeds));
    else if (key == "redis_password") options->feature_store.redis.password = value;
    else if (key == "read_thread_num") PROCESSOR_RETURN_IF_ERROR(ParseInt(key, value, &options->feature_store.redis.connections_per_node));
    else if (key == "redis_model") options->feature_store.model = value;
    else if (key == "redis_version") PROCESSOR_RETURN_IF_ERROR(ParseInt64(key, value, &options->feature_store.version));
    else if (key == "redis_partitions") PROCESSOR_RETURN_IF_ERROR(ParseInt(key, value, &options->feature_store.partitions));
    else if (key == "redis_token") options->feature_store.token = value;
    else if (key.rfind(kMonolithPrefix, 0) == 0 && key.size() > sizeof(kMonolithPrefix) - 1) {
      options->feature_store.monolith_shards[key.substr(sizeof(kMonolithPrefix) - 1)] = SplitLines(value);
    }
    else return Status::InvalidArgument("unknown load option '" + key + "'");
  }
  if (options->savedmodel_dir.empty()) return Status::InvalidArgument("load option 'savedmodel_dir' is required");
  if (options->session.session_num < 1) return Status::InvalidArgument("load option 'session_num' must be >= 1");
  const processor::FeatureStoreOptions& store = options->feature_store;
  if (store.type == "redis" && (store.redis.seeds.empty() || store.model.empty())) {
    return Status::InvalidArgument("load options 'redis_url' and 'redis_model' are required with feature_store 'redis'");
  }
  if (store.partitions < 1 || store.redis.connections_per_node < 1) {
    return Status::InvalidArgument("load options 'redis_partitions' and 'read_thread_num' must be >= 1");
  }
  return Status::Ok();
}

void SetError(const Status& status, char** error) {
  if (!error) return;
  void* buffer = nullptr;
  int size = 0;
  processor::CopyToMallocBuffer(status.message(), &buffer, &size);
  *error = static_cast<char*>(buffer);
}

// Runs `action` (returning a Status); a failure or an exception becomes *error. Returns 0 or -1.
template <typename Action>
int Report(const char* what, char** error, Action&& action) {
  if (error) *error = nullptr;
  Status status;
  try {
    status = action();
  } catch (const std::exception& e) {
    status = Status::Internal(std::string("unexpected exception while ") + what + ": " + e.what());
  } catch (...) {
    status = Status::Internal(std::string("unexpected exception while ") + what);
  }
  if (status.ok()) return 0;
  SetError(status, error);
  return -1;
}

}  // namespace

extern "C" {

PROCESSOR_EXPORT processor_servable* processor_control_load(const char* const* keys, const char* const* values,
                                                            int count, char** error) {
  processor_servable* result = nullptr;
  Report("loading", error, [&] {
    processor::LoadOptions options;
    PROCESSOR_RETURN_IF_ERROR(ParseLoadOptions(keys, values, count, &options));
    std::shared_ptr<Servable> servable;
    PROCESSOR_RETURN_IF_ERROR(Servable::Load(options, &servable));
    result = new processor_servable{std::move(servable)};
    return Status::Ok();
  });
  return result;
}

PROCESSOR_EXPORT int processor_control_plan_embeddings(const char* const* keys, const char* const* values, int count,
                                                       void** output, int* output_size, char** error) {
  return Report("planning the feature store", error, [&] {
    processor::LoadOptions options;
    PROCESSOR_RETURN_IF_ERROR(ParseLoadOptions(keys, values, count, &options));
    std::string bytes;
    processor::MetaGraphSpec meta_graph;
    processor::RewritePlan plan;
    PROCESSOR_RETURN_IF_ERROR(processor::PlanEmbeddings(options, &bytes, &meta_graph, &plan));
    std::string lines;
    for (const processor::EmbeddingVariable& embedding : plan.embeddings) {
      lines += embedding.name + "\t" + std::to_string(embedding.rows) + "\t" + std::to_string(embedding.dim) + "\t" +
               embedding.saved_name + "\t" + std::to_string(embedding.first_row) + "\n";
    }
    processor::CopyToMallocBuffer(lines, output, output_size);
    return Status::Ok();
  });
}

PROCESSOR_EXPORT int processor_control_savedmodel_restores_variables(const void* saved_model, int size) {
  if (!saved_model || size <= 0) return 0;
  try {
    return processor::SavedModelRestoresVariables(
               std::string_view(static_cast<const char*>(saved_model), static_cast<size_t>(size))) ? 1 : 0;
  } catch (...) {
    return 0;  // out of memory: the load itself decides
  }
}

PROCESSOR_EXPORT int processor_control_session_config(const char* const* keys, const char* const* values, int count,
                                                      void** output, int* output_size, char** error) {
  return Report("encoding a session config", error, [&] {
    processor::LoadOptions options;
    PROCESSOR_RETURN_IF_ERROR(ParseLoadOptions(keys, values, count, &options));
    processor::CopyToMallocBuffer(processor::EncodeConfigProto(options.session), output, output_size);
    return Status::Ok();
  });
}

PROCESSOR_EXPORT int processor_control_servable_apply_delta(processor_servable* servable, const char* prefix,
                                                           const char* const* variables, const int* sparse,
                                                           const int* key_dtypes, int count, char** error) {
  return Report("applying a delta", error, [&] {
    std::vector<processor::DeltaVariable> deltas(count > 0 ? count : 0);
    for (int i = 0; i < count; ++i) {
      deltas[i].name = variables[i];
      deltas[i].sparse = sparse[i] != 0;
      deltas[i].key_dtype = static_cast<TF_DataType>(key_dtypes[i]);
    }
    return servable->servable->ApplyDelta(prefix ? prefix : "", deltas);
  });
}

PROCESSOR_EXPORT int processor_control_servable_restore(processor_servable* servable, const char* prefix, char** error) {
  return Report("restoring", error, [&] { return servable->servable->Restore(prefix ? prefix : ""); });
}

PROCESSOR_EXPORT const char* processor_control_servable_run_interface(processor_servable* servable, const char** reason) {
  if (reason) *reason = servable->servable->callable_error().c_str();
  return servable->servable->run_interface();
}

PROCESSOR_EXPORT int processor_control_servable_variables(processor_servable* servable, void** output,
                                                          int* output_size) {
  std::string lines;
  for (const processor::VariableSpec& variable : servable->servable->Variables()) {
    lines += variable.name + '\t' + std::to_string(variable.dtype) + '\t';
    if (!variable.known_rank) lines += '?';
    for (size_t i = 0; i < variable.shape.size(); ++i) lines += (i ? "," : "") + std::to_string(variable.shape[i]);
    lines += '\t' + variable.saved_name + '\n';
  }
  processor::CopyToMallocBuffer(lines, output, output_size);
  return 0;
}

PROCESSOR_EXPORT void processor_control_release(processor_servable* servable) { delete servable; }

PROCESSOR_EXPORT int processor_control_servable_process(processor_servable* servable, const void* input_data,
                                                        int input_size, void** output_data, int* output_size) {
  return processor::ServeRequest(servable ? servable->servable.get() : nullptr, processor::RequestLimits(), input_data,
                                 input_size, output_data, output_size);
}


PROCESSOR_EXPORT void* processor_control_new_model(const char* model_name) {
  auto* handle = new ModelHandle();
  handle->model_name = model_name ? model_name : "";
  return handle;
}

PROCESSOR_EXPORT void processor_control_delete_model(void* model) { delete static_cast<ModelHandle*>(model); }

PROCESSOR_EXPORT void processor_control_install(void* model, processor_servable* servable, const void* model_info,
                                                int model_info_size) {
  std::string info(static_cast<const char*>(model_info), model_info_size > 0 ? model_info_size : 0);
  static_cast<ModelHandle*>(model)->versions.Install(servable->servable, std::move(info));
}

PROCESSOR_EXPORT void processor_control_set_model_info(void* model, const void* model_info, int model_info_size) {
  std::string info(static_cast<const char*>(model_info), model_info_size > 0 ? model_info_size : 0);
  static_cast<ModelHandle*>(model)->versions.SetModelInfo(std::move(info));
}

PROCESSOR_EXPORT void processor_control_set_timeline(void* model, long long start, long long interval, long long count,
                                                     const char* path) {
  static_cast<ModelHandle*>(model)->timeline.Configure(start, interval, count, path ? path : "");
}

PROCESSOR_EXPORT void processor_control_set_limits(void* model, long long max_request_bytes,
                                                   long long max_tensor_elements) {
  auto* handle = static_cast<ModelHandle*>(model);
  handle->max_request_bytes.store(max_request_bytes, std::memory_order_relaxed);
  handle->max_tensor_elements.store(max_tensor_elements, std::memory_order_relaxed);
}

PROCESSOR_EXPORT int processor_control_set_request_log(void* model, const char* path, double sample_rate,
                                                       long long max_records, long long max_bytes, int backups,
                                                       char** error) {
  auto* handle = static_cast<ModelHandle*>(model);
  return Report("starting the request log", error, [&] {
    if (!path || !*path) {
      handle->request_log.Stop();
      return Status::Ok();
    }
    return handle->request_log.Start({path, sample_rate, max_records, max_bytes, backups});
  });
}

PROCESSOR_EXPORT void processor_control_unload(void* model) { static_cast<ModelHandle*>(model)->versions.Unload(); }

}  // extern "C"
