// The control plane's private C API (abi/control_api.h).
#include "abi/control_api.h"

#include <exception>
#include <memory>
#include <string>
#include <string_view>

#include "abi/control_messages.h"
#include "abi/model_handle.h"
#include "model/meta_graph.h"
#include "serving/request_processor.h"

using processor::ModelHandle;
using processor::Servable;
using processor::Status;

struct processor_servable {
  std::shared_ptr<Servable> servable;
};

struct processor_load_plan {
  std::unique_ptr<processor::LoadPlan> plan;
};

namespace {

std::string_view Bytes(const void* data, int size) {
  return data && size > 0 ? std::string_view(static_cast<const char*>(data), static_cast<size_t>(size)) : std::string_view();
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

PROCESSOR_EXPORT processor_load_plan* processor_control_plan_load(const void* request, int size, char** error) {
  processor_load_plan* result = nullptr;
  Report("planning a load", error, [&] {
    processor::LoadOptions options;
    PROCESSOR_RETURN_IF_ERROR(processor::control::ParseLoadRequest(Bytes(request, size), &options));
    std::unique_ptr<processor::LoadPlan> plan;
    PROCESSOR_RETURN_IF_ERROR(processor::LoadPlan::Make(std::move(options), &plan));
    result = new processor_load_plan{std::move(plan)};
    return Status::Ok();
  });
  return result;
}

PROCESSOR_EXPORT void processor_control_plan_embeddings(processor_load_plan* plan, void** output, int* output_size) {
  processor::CopyToMallocBuffer(processor::control::EncodeEmbeddingPlan(plan->plan->rewrite.embeddings), output,
                                output_size);
}

PROCESSOR_EXPORT processor_servable* processor_control_load(processor_load_plan* plan, const void* sources, int size,
                                                            char** error) {
  processor_servable* result = nullptr;
  Report("loading", error, [&] {
    processor::LoadPlan& load = *plan->plan;
    processor::FeatureStoreOptions& store = load.options.feature_store;
    store.monolith_shards.clear();
    store.redis_key_prefixes.clear();
    PROCESSOR_RETURN_IF_ERROR(processor::control::ParseTableSources(Bytes(sources, size), &store));
    std::shared_ptr<Servable> servable;
    PROCESSOR_RETURN_IF_ERROR(Servable::Load(load, &servable));
    result = new processor_servable{std::move(servable)};
    return Status::Ok();
  });
  return result;
}

PROCESSOR_EXPORT void processor_control_release_plan(processor_load_plan* plan) { delete plan; }

PROCESSOR_EXPORT int processor_control_savedmodel_restores_variables(const void* saved_model, int size) {
  if (!saved_model || size <= 0) return 0;
  try {
    return processor::SavedModelRestoresVariables(
               std::string_view(static_cast<const char*>(saved_model), static_cast<size_t>(size))) ? 1 : 0;
  } catch (...) {
    return 0;  // out of memory: the load itself decides
  }
}

PROCESSOR_EXPORT int processor_control_session_config(const void* settings, int size, void** output,
                                                      int* output_size, char** error) {
  return Report("encoding a session config", error, [&] {
    processor::SessionSettings parsed;
    PROCESSOR_RETURN_IF_ERROR(processor::control::ParseSessionSettings(Bytes(settings, size), &parsed));
    processor::CopyToMallocBuffer(processor::EncodeConfigProto(parsed), output, output_size);
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

PROCESSOR_EXPORT int processor_control_servable_restore(processor_servable* servable, const void* request, int size,
                                                        char** error) {
  return Report("restoring", error, [&] {
    std::string prefix;
    std::vector<processor::SavedTensor> saved;
    PROCESSOR_RETURN_IF_ERROR(processor::control::ParseRestoreRequest(Bytes(request, size), &prefix, &saved));
    return servable->servable->Restore(prefix, saved);
  });
}

PROCESSOR_EXPORT int processor_control_servable_forget_rows(processor_servable* servable, const char* variable,
                                                            const long long* ids, long long count) {
  static_assert(sizeof(long long) == sizeof(int64_t), "ids are int64");
  servable->servable->ForgetRows(variable ? variable : "", reinterpret_cast<const int64_t*>(ids),
                                 ids ? static_cast<size_t>(count) : 0);
  return 0;
}

PROCESSOR_EXPORT const char* processor_control_servable_run_interface(processor_servable* servable,
                                                                      const char* signature_name, void** reason,
                                                                      int* reason_size) {
  const processor::Servable& s = *servable->servable;
  const processor::BoundSignature* signature = signature_name ? s.FindSignature(signature_name) : &s.signature();
  if (!signature) return nullptr;
  std::string why;
  const char* state = s.RunInterface(*signature, &why);
  if (reason) processor::CopyToMallocBuffer(why, reason, reason_size);
  return state;
}

PROCESSOR_EXPORT int processor_control_servable_variables(processor_servable* servable, void** output,
                                                          int* output_size) {
  processor::CopyToMallocBuffer(processor::control::EncodeVariableList(servable->servable->Variables()), output,
                                output_size);
  return 0;
}

PROCESSOR_EXPORT void processor_control_release(processor_servable* servable) { delete servable; }

PROCESSOR_EXPORT int processor_control_servable_process(processor_servable* servable, int format,
                                                        const void* input_data, int input_size, void** output_data,
                                                        int* output_size) {
  return processor::ServeRequest(servable ? servable->servable.get() : nullptr, processor::RequestLimits(), input_data,
                                 input_size, output_data, output_size, nullptr,
                                 static_cast<processor::RequestFormat>(format));
}


PROCESSOR_EXPORT int processor_control_process_version(void* handle, int format, long long version,
                                                       int strict_signature_name, const void* input_data,
                                                       int input_size, void** output_data, int* output_size) {
  try {
    return processor::ServeOnHandle(handle, format, {version, {}, strict_signature_name != 0}, input_data, input_size,
                                    output_data, output_size);
  } catch (...) {
    return PROCESSOR_INTERNAL_ERROR;  // ServeOnHandle answers its own errors; this is its bookkeeping's
  }
}

PROCESSOR_EXPORT void* processor_control_new_handle(const char* model_name) {
  auto* handle = new ModelHandle();
  handle->model_name = model_name ? model_name : "";
  return handle;
}

PROCESSOR_EXPORT void processor_control_delete_handle(void* handle) { delete static_cast<ModelHandle*>(handle); }

PROCESSOR_EXPORT void processor_control_install(void* handle, processor_servable* servable, const void* model_info,
                                                int model_info_size) {
  std::string info(static_cast<const char*>(model_info), model_info_size > 0 ? model_info_size : 0);
  static_cast<ModelHandle*>(handle)->versions.Install(servable->servable, std::move(info));
}

PROCESSOR_EXPORT void processor_control_set_model_info(void* handle, const void* model_info, int model_info_size) {
  std::string info(static_cast<const char*>(model_info), model_info_size > 0 ? model_info_size : 0);
  static_cast<ModelHandle*>(handle)->versions.SetModelInfo(std::move(info));
}

PROCESSOR_EXPORT void processor_control_set_timeline(void* handle, long long start, long long interval, long long count,
                                                     const char* path) {
  static_cast<ModelHandle*>(handle)->timeline.Configure(start, interval, count, path ? path : "");
}

PROCESSOR_EXPORT void processor_control_set_limits(void* handle, long long max_request_bytes,
                                                   long long max_tensor_elements) {
  auto* model = static_cast<ModelHandle*>(handle);
  model->max_request_bytes.store(max_request_bytes, std::memory_order_relaxed);
  model->max_tensor_elements.store(max_tensor_elements, std::memory_order_relaxed);
}

PROCESSOR_EXPORT int processor_control_set_request_log(void* handle, const char* path, double sample_rate,
                                                       long long max_records, long long max_bytes, int backups,
                                                       char** error) {
  auto* model = static_cast<ModelHandle*>(handle);
  return Report("starting the request log", error, [&] {
    if (!path || !*path) {
      model->request_log.Stop();
      return Status::Ok();
    }
    return model->request_log.Start({path, sample_rate, max_records, max_bytes, backups});
  });
}

PROCESSOR_EXPORT void processor_control_unload(void* handle) { static_cast<ModelHandle*>(handle)->versions.Unload(); }

}  // extern "C"
