/* Processor: an embeddable serving library for TensorFlow recommendation models.
 *
 * The C ABI of DeepRec's processor. Requests and responses are serialized protocol buffers of
 * protos/predict.proto (PredictRequest, PredictResponse, ServingModelInfo).
 *
 * Threads: every function may be called from any thread; process() and get_serving_model_info() may
 * run on many threads at once, also while the model updates itself. finalize() must not race with
 * other calls on the same handle (like free()).
 *
 * Memory: every buffer the library returns through an `output_data` pointer is the caller's, and comes
 * from the process's malloc() (a replacement such as jemalloc or tcmalloc included, when the dynamic
 * linker sees it). Release it with free_buffer(); free() is correct too, except in a host that links a
 * private allocator it does not export.
 *
 * Loading: dlopen() this library with any flags, or link it. It needs libc alone, and loads TensorFlow
 * isolated from the host's own libraries (protobuf, gRPC, abseil, re2, zlib, OpenSSL): see
 * docs/embedding.md.
 */
#ifndef PROCESSOR_H_
#define PROCESSOR_H_

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PROCESSOR_EXPORT __attribute__((visibility("default")))
#else
#define PROCESSOR_EXPORT
#endif

/* The version of this header, as sqlite3.h spells its own: PROCESSOR_VERSION_NUMBER is
 * major * 1000000 + minor * 1000 + patch. processor_libversion_number() says which library is loaded:
 * a host built against one header may run with another library. */
#define PROCESSOR_VERSION "0.1.0"
#define PROCESSOR_VERSION_NUMBER 1000

/* Return codes of process() and get_serving_model_info(), HTTP-like. */
enum {
  PROCESSOR_OK = 200,
  PROCESSOR_BAD_REQUEST = 400,   /* the request is wrong; the message says what */
  PROCESSOR_NOT_FOUND = 404,     /* process_as(): the request names a version this handle does not serve */
  PROCESSOR_INTERNAL_ERROR = 500,
  PROCESSOR_UNAVAILABLE = 503    /* no model version is ready */
};

/* Loads a model and returns its opaque handle.
 * model_entry: put before the config's warmup_file_name, as DeepRec's processor does; may be "" (not NULL).
 * model_config: the JSON configuration (docs/configuration.md); borrowed for the call.
 * state: set to 0 on success, -1 on failure.
 * Returns NULL on failure; the reason is logged to stderr. The caller owns the handle and releases it
 * with finalize(). In a process without Python, the first call starts an embedded interpreter that
 * runs the control plane (config, discovery, updates); requests never take its lock. */
PROCESSOR_EXPORT void* initialize(const char* model_entry, const char* model_config, int* state);

/* Serves one serialized PredictRequest (input_data, input_size bytes, borrowed).
 * On PROCESSOR_OK, *output_data is a serialized PredictResponse of *output_size bytes; on any other
 * code it is a UTF-8 message naming what is wrong (NUL-terminated, *output_size excludes the NUL).
 * input_size == 0 answers PROCESSOR_OK with a JSON description of the signature.
 * The caller owns *output_data. */
PROCESSOR_EXPORT int process(void* model_buf, const void* input_data, int input_size, void** output_data,
                             int* output_size);

/* Request formats of process_as(). */
enum {
  PROCESSOR_FORMAT_DEEPREC = 0,            /* what process() takes: protos/predict.proto's PredictRequest */
  PROCESSOR_FORMAT_TF_SERVING_PREDICT = 1  /* TF Serving's tensorflow.serving.PredictRequest */
};

/* process() for a request in another format, decoded straight into tensors as process()'s are.
 * PROCESSOR_FORMAT_TF_SERVING_PREDICT: input_data is a serialized tensorflow.serving.PredictRequest
 * (tensorflow_serving/apis/predict.proto: TensorProto inputs with tensor_content or the typed value
 * fields, half and bfloat16 in half_val); on PROCESSOR_OK, *output_data is a serialized
 * tensorflow.serving.PredictResponse with the values in the dtype's field (as TF Serving writes them)
 * and model_spec naming the request's model, the serving version and the signature. The request's
 * model_spec is not routed here (the host picks the handle), but it is checked: a version, when set,
 * must be the one serving (otherwise PROCESSOR_NOT_FOUND, "Servable not found for request:
 * Specific(NAME, VERSION)"), and a signature_name the signature served (otherwise 400, 'Serving
 * signature key "NAME" not found.'). An unknown format answers PROCESSOR_BAD_REQUEST. Otherwise as
 * process(). */
PROCESSOR_EXPORT int process_as(void* model_buf, int format, const void* input_data, int input_size,
                                void** output_data, int* output_size);

/* Writes a serialized ServingModelInfo describing the version being served into *output_data
 * (owned by the caller). Returns PROCESSOR_OK, or an error code with a message as for process(). */
PROCESSOR_EXPORT int get_serving_model_info(void* model_buf, void** output_data, int* output_size);

/* Writes the model's metrics in Prometheus text exposition format (UTF-8) into *output_data (owned by
 * the caller): request counts by status, a request latency histogram in microseconds, the serving
 * version, load latency and update counts, with TensorFlow Serving's metric names. Returns
 * PROCESSOR_OK, or an error code with a message as for process(). */
PROCESSOR_EXPORT int get_metrics(void* model_buf, void** output_data, int* output_size);

/* Serves an earlier model version again, and pins serving to it until a version newer than any seen so
 * far appears (or the Python API's unpin()). version: a checkpoint step among the versions the model
 * kept (config rollback_keep), or -1 for the version before the serving one. Blocks while the version
 * loads; requests keep being served meanwhile. Returns PROCESSOR_OK; PROCESSOR_BAD_REQUEST when the
 * version is not kept; PROCESSOR_INTERNAL_ERROR when it no longer loads (the serving version stays);
 * PROCESSOR_UNAVAILABLE for a NULL or finalized handle. The reason of a failure is logged. */
PROCESSOR_EXPORT int rollback(void* model_buf, long long version);

/* Releases a buffer returned by this library (the process's free()). NULL is ignored. */
PROCESSOR_EXPORT void free_buffer(void* buffer);

/* Stops the model's background work and releases the handle from initialize(). Requests already
 * running finish first on the version they started on. The handle is invalid afterwards; NULL is
 * ignored. */
PROCESSOR_EXPORT void finalize(void* model_buf);

/* The loaded library's version: PROCESSOR_VERSION and PROCESSOR_VERSION_NUMBER as it was built. Both
 * work before initialize() and never load TensorFlow; the string is static (not to be freed). */
PROCESSOR_EXPORT const char* processor_libversion(void);
PROCESSOR_EXPORT int processor_libversion_number(void);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* PROCESSOR_H_ */
