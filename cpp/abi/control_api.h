/* The control plane's private view of the data plane.
 *
 * Used only by the Python binding (processor._core) that ships in the same package; not installed,
 * not stable. It is plain C so that libserving_processor_engine.so exports nothing but C symbols.
 * Strings are borrowed for the call. Errors come back as a message from malloc() that the caller frees
 * with free_buffer().
 */
#ifndef PROCESSOR_CONTROL_API_H_
#define PROCESSOR_CONTROL_API_H_

#include "processor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct processor_servable processor_servable; /* one loaded model version */

/* Loads a version. Options are key/value strings: savedmodel_dir (required), signature_name, tags
 * (comma-separated), checkpoint_prefix, intra_op_threads, inter_op_threads, use_per_session_threads,
 * inline_execute, update_inter_op_threads, session_num, select_session_policy (MOD or RR); the feature
 * store: feature_store ("local" or "redis"), embedding_names (comma-separated), embedding_min_rows,
 * embedding_default_value, for local: monolith:<variable> (the shards of the Monolith dump that is
 * its table, one path per line), and for redis: redis_url, redis_password, read_thread_num, redis_model,
 * redis_version, redis_partitions, redis_token. Returns NULL and sets *error on failure; the caller owns the result. */
PROCESSOR_EXPORT processor_servable* processor_control_load(const char* const* keys, const char* const* values,
                                                            int count, char** error);
/* The embedding variables a load with these options (feature_store set) serves from the store, one
 * per line: name TAB rows TAB dim TAB the name its rows are saved under TAB its first row there (a
 * part of a partitioned variable is a slice of the saved one), in a buffer from malloc(). Reads the SavedModel's graph only.
 * Returns 0, or -1 and *error. */
PROCESSOR_EXPORT int processor_control_plan_embeddings(const char* const* keys, const char* const* values, int count,
                                                       void** output, int* output_size, char** error);
/* 1 when the serialized SavedModel `saved_model` (saved_model.pb, `size` bytes) has a graph with
 * variables to restore (a saver_def), else 0: such a version is complete only with its variables/. */
PROCESSOR_EXPORT int processor_control_savedmodel_restores_variables(const void* saved_model, int size);
/* The serialized tensorflow.ConfigProto a load with these options gives its session (what `python -m
 * processor inspect` reports as the threads; same options as
 * processor_control_load). Returns 0 and a buffer from malloc() in *output, or -1 and *error. */
PROCESSOR_EXPORT int processor_control_session_config(const char* const* keys, const char* const* values, int count,
                                                      void** output, int* output_size, char** error);
/* Applies the incremental checkpoint at `prefix` to this version, atomically for requests. For each of
 * `count` variables: its graph name, whether it changed by rows (sparse != 0: tensors
 * <name>-sparse_incr_keys / -sparse_incr_values, keys of key_dtypes[i]) or whole (tensor <name>).
 * Returns 0, or -1 and *error; on error no variable was written. */
PROCESSOR_EXPORT int processor_control_servable_apply_delta(processor_servable* servable, const char* prefix,
                                                           const char* const* variables, const int* sparse,
                                                           const int* key_dtypes, int count, char** error);
/* Restores the checkpoint at `prefix` into this version's live session (not atomic for requests in
 * flight). Returns 0, or -1 and *error. */
PROCESSOR_EXPORT int processor_control_servable_restore(processor_servable* servable, const char* prefix, char** error);
/* The graph's variables, one per line: name TAB dtype (TF_DataType) TAB dims joined by ',' ('?' when
 * the graph does not know the rank; -1 for an unknown dim) TAB, for a part of a partitioned variable,
 * the full variable's name checkpoints save it under (else nothing), in a buffer from malloc().
 * Returns 0. */
PROCESSOR_EXPORT int processor_control_servable_variables(processor_servable* servable, void** output,
                                                          int* output_size);
/* How this version's requests reach TensorFlow: "callable" (TF's callable interface) or "session_run"
 * (TF_SessionRun, when TensorFlow made no callable at load). A static string. With "session_run",
 * *reason (if not NULL) is set to why, borrowed while the servable lives. */
PROCESSOR_EXPORT const char* processor_control_servable_run_interface(processor_servable* servable, const char** reason);
/* Releases the caller's reference; requests and models still holding the version keep it alive. */
PROCESSOR_EXPORT void processor_control_release(processor_servable* servable);
/* Serves a request on this version alone (for warmup), with process()'s contract and default limits. */
PROCESSOR_EXPORT int processor_control_servable_process(processor_servable* servable, const void* input_data,
                                                        int input_size, void** output_data, int* output_size);

/* A model handle as process() takes it, serving nothing yet (503); `model_name` labels its metrics.
 * Released with processor_control_delete_model(), never with finalize() (which goes through the
 * control plane). */
PROCESSOR_EXPORT void* processor_control_new_model(const char* model_name);
PROCESSOR_EXPORT void processor_control_delete_model(void* model);
/* Makes `servable` the serving version atomically, with its serialized ServingModelInfo (borrowed). New
 * requests get it at once; returns once the requests still on the replaced version have answered, and
 * releases that version. Must not be called from inside process(). */
PROCESSOR_EXPORT void processor_control_install(void* model, processor_servable* servable, const void* model_info,
                                                int model_info_size);
/* Replaces the serving version's ServingModelInfo; waits as processor_control_install does. */
PROCESSOR_EXPORT void processor_control_set_model_info(void* model, const void* model_info, int model_info_size);
/* Traces `count` requests, every `interval` from step `start`, into <path>/timeline-<step>.json
 * (Chrome trace format). count 0 turns tracing off. */
PROCESSOR_EXPORT void processor_control_set_timeline(void* model, long long start, long long interval, long long count,
                                                     const char* path);
/* Bounds what one request may make process() allocate: its size in bytes and each input tensor's
 * element count (larger requests get 400). Defaults: 64 MiB and 2^24 elements. */
PROCESSOR_EXPORT void processor_control_set_limits(void* model, long long max_request_bytes,
                                                   long long max_tensor_elements);
/* Logs a sample (`sample_rate`, 0..1) of the requests answered 200 into a TFRecord file at `path`,
 * rotated when it holds `max_records` records or `max_bytes` bytes (path.1 .. path.<backups> keep the
 * older ones). An empty `path` stops logging. Returns 0, or -1 and *error (the file cannot be opened). */
PROCESSOR_EXPORT int processor_control_set_request_log(void* model, const char* path, double sample_rate,
                                                       long long max_records, long long max_bytes, int backups,
                                                       char** error);
/* Stops serving: process() answers 503 until the next install. Waits as processor_control_install does. */
PROCESSOR_EXPORT void processor_control_unload(void* model);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* PROCESSOR_CONTROL_API_H_ */
