/* The control plane's private view of the data plane.
 *
 * Used only by the Python binding (processor._core) that ships in the same package; not installed,
 * not stable. It is plain C so that libserving_processor_engine.so exports nothing but C symbols.
 * Strings and messages are borrowed for the call. Errors come back as a message from malloc() that the caller frees
 * with free_buffer().
 */
#ifndef PROCESSOR_CONTROL_API_H_
#define PROCESSOR_CONTROL_API_H_

#include "processor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct processor_servable processor_servable; /* one loaded model version */
typedef struct processor_load_plan processor_load_plan; /* step 1 of a load */

/* Messages are serialized protos of protos/control.proto (one per step, typed; abi/control_messages.h
 * reads and writes them). */

/* Step 1 of a load: reads `request` (a LoadRequest) and, with a feature store, the SavedModel's graph,
 * planning the variables the store serves. Returns NULL and sets *error on failure; the caller owns the
 * result and releases it with processor_control_release_plan(). */
PROCESSOR_EXPORT processor_load_plan* processor_control_plan_load(const void* request, int size, char** error);
/* The plan's EmbeddingPlan (empty without a feature store), in a buffer from malloc(). */
PROCESSOR_EXPORT void processor_control_plan_embeddings(processor_load_plan* plan, void** output, int* output_size);
/* Step 2: loads the planned version. `sources` (a TableSources, `size` bytes; NULL/0 without a feature
 * store) says where its tables come from. The plan stays the caller's. Returns NULL and sets *error on
 * failure; the caller owns the result. */
PROCESSOR_EXPORT processor_servable* processor_control_load(processor_load_plan* plan, const void* sources, int size,
                                                            char** error);
PROCESSOR_EXPORT void processor_control_release_plan(processor_load_plan* plan);
/* 1 when the serialized SavedModel `saved_model` (saved_model.pb, `size` bytes) has a graph with
 * variables to restore (a saver_def), else 0: such a version is complete only with its variables/. */
PROCESSOR_EXPORT int processor_control_savedmodel_restores_variables(const void* saved_model, int size);
/* The serialized tensorflow.ConfigProto a load with `settings` (a SessionSettings) gives its session
 * (what `python -m processor inspect` reports as the threads). Returns 0 and a buffer from malloc() in
 * *output, or -1 and *error. */
PROCESSOR_EXPORT int processor_control_session_config(const void* settings, int size, void** output,
                                                      int* output_size, char** error);
/* Applies the incremental checkpoint at `prefix` to this version, atomically for requests. For each of
 * `count` variables: its graph name, whether it changed by rows (sparse != 0: tensors
 * <name>-sparse_incr_keys / -sparse_incr_values, keys of key_dtypes[i]) or whole (tensor <name>).
 * Returns 0, or -1 and *error; on error no variable was written. */
PROCESSOR_EXPORT int processor_control_servable_apply_delta(processor_servable* servable, const char* prefix,
                                                           const char* const* variables, const int* sparse,
                                                           const int* key_dtypes, int count, char** error);
/* Restores a checkpoint into this version's live session (not atomic for requests in flight); `request`
 * is a RestoreRequest, whose checkpoint must fit the graph. Returns 0, or -1 and *error. */
PROCESSOR_EXPORT int processor_control_servable_restore(processor_servable* servable, const void* request, int size,
                                                        char** error);
/* A delta changed rows in Redis behind this version's hot-row cache: the cache forgets `count` ids
 * (int64) of table `variable`, or all it holds of that table when ids is NULL, of every table when
 * variable is "". Nothing happens without a cache. Returns 0. */
PROCESSOR_EXPORT int processor_control_servable_forget_rows(processor_servable* servable, const char* variable,
                                                            const long long* ids, long long count);
/* The graph's variables: a VariableList in a buffer from malloc(). Returns 0. */
PROCESSOR_EXPORT int processor_control_servable_variables(processor_servable* servable, void** output,
                                                          int* output_size);
/* How requests of signature `signature_name` (NULL: the main one) reach TensorFlow: "callable" (TF's
 * callable interface), "session_run" (TF_SessionRun, when TensorFlow made no callable), or "unmade"
 * (a signature other than the main one, whose callables its first requests make). A static string;
 * NULL when the version serves no such signature. *reason (if not NULL) receives why TensorFlow made no
 * callable ("" otherwise) in a buffer from malloc() the caller frees with free_buffer(). */
PROCESSOR_EXPORT const char* processor_control_servable_run_interface(processor_servable* servable,
                                                                      const char* signature_name, void** reason,
                                                                      int* reason_size);
/* Releases the caller's reference; requests and models still holding the version keep it alive. */
PROCESSOR_EXPORT void processor_control_release(processor_servable* servable);
/* Serves a request of `format` (PROCESSOR_FORMAT_*) on this version alone (for warmup), with process_as()'s
 * contract and default limits; a TF Serving request's model_spec.version is not checked. */
PROCESSOR_EXPORT int processor_control_servable_process(processor_servable* servable, int format,
                                                        const void* input_data, int input_size, void** output_data,
                                                        int* output_size);

/* process_as() answered by the serving version only if its number (ServingModelInfo's, the one TF Serving's
 * API shows) is `version` (-1: any); 404 otherwise, checked under the same hold as the run, so that a swap
 * cannot answer a request naming a version from another one. With `strict_signature_name`, a DeepRec
 * request naming a signature that version lacks gets 400, not the main signature. */
PROCESSOR_EXPORT int processor_control_process_version(void* handle, int format, long long version,
                                                       int strict_signature_name, const void* input_data,
                                                       int input_size, void** output_data, int* output_size);

/* A model handle as process() takes it, serving nothing yet (503); `model_name` labels its metrics.
 * Released with processor_control_delete_handle(), never with finalize() (which goes through the
 * control plane). */
PROCESSOR_EXPORT void* processor_control_new_handle(const char* model_name);
PROCESSOR_EXPORT void processor_control_delete_handle(void* handle);
/* Makes `servable` the serving version atomically, with its serialized ServingModelInfo (borrowed). New
 * requests get it at once; returns once the requests still on the replaced version have answered, and
 * releases that version. Must not be called from inside process(). */
PROCESSOR_EXPORT void processor_control_install(void* handle, processor_servable* servable, const void* model_info,
                                                int model_info_size);
/* Replaces the serving version's ServingModelInfo; waits as processor_control_install does. */
PROCESSOR_EXPORT void processor_control_set_model_info(void* handle, const void* model_info, int model_info_size);
/* Traces `count` requests, every `interval` from step `start`, into <path>/timeline-<step>.json
 * (Chrome trace format). count 0 turns tracing off. */
PROCESSOR_EXPORT void processor_control_set_timeline(void* handle, long long start, long long interval, long long count,
                                                     const char* path);
/* Bounds what one request may make process() allocate: its size in bytes and each input tensor's
 * element count (larger requests get 400). Defaults: 64 MiB and 2^24 elements. */
PROCESSOR_EXPORT void processor_control_set_limits(void* handle, long long max_request_bytes,
                                                   long long max_tensor_elements);
/* Logs a sample (`sample_rate`, 0..1) of the requests answered 200 into a TFRecord file at `path`,
 * rotated when it holds `max_records` records or `max_bytes` bytes (path.1 .. path.<backups> keep the
 * older ones). An empty `path` stops logging. Returns 0, or -1 and *error (the file cannot be opened). */
PROCESSOR_EXPORT int processor_control_set_request_log(void* handle, const char* path, double sample_rate,
                                                       long long max_records, long long max_bytes, int backups,
                                                       char** error);
/* Stops serving: process() answers 503 until the next install. Waits as processor_control_install does. */
PROCESSOR_EXPORT void processor_control_unload(void* handle);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* PROCESSOR_CONTROL_API_H_ */
