/* libserving_processor.so: the library hosts load (include/processor.h).
 *
 * It depends on libc alone. The engine (libserving_processor_engine.so, next to it) carries TensorFlow,
 * whose libraries define thousands of protobuf, re2, zlib and abseil symbols. Loaded the usual way into
 * a host that links its own copies (every gRPC server does), TensorFlow's references bind to the host's,
 * and it crashes inside dlopen(). So the shim loads the engine, on the first initialize(), with
 * RTLD_DEEPBIND | RTLD_LOCAL: TensorFlow and the engine resolve every symbol in their own libraries
 * first, and nothing of theirs becomes visible to the host, however the host loaded the shim (dlopen()
 * with any flags, or linked). The engine forwards its malloc family to the process's
 * (cpp/abi/process_allocator.c), so the process keeps one heap under a malloc replacement.
 * docs/embedding.md says why not dlmopen(), and what this costs.
 *
 * The engine goes into the host's scope without RTLD_DEEPBIND when
 * - the host runs under AddressSanitizer, ThreadSanitizer or MemorySanitizer, whose runtimes refuse
 *   RTLD_DEEPBIND;
 * - PROCESSOR_ISOLATION=none is in the environment (PROCESSOR_ISOLATION=deepbind forces the default).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor.h"

#define ENGINE_FILE "libserving_processor_engine.so"
#define TF_LOG_LEVEL_VARIABLE "TF_CPP_MIN_LOG_LEVEL"
#define QUIET_TF_LOG_LEVEL "1" /* warnings and errors; src/processor/__init__.py sets the same */

struct engine {
  void* (*initialize)(const char*, const char*, int*);
  int (*process)(void*, const void*, int, void**, int*);
  int (*process_as)(void*, int, const void*, int, void**, int*);
  int (*get_serving_model_info)(void*, void**, int*);
  int (*get_metrics)(void*, void**, int*);
  int (*rollback)(void*, long long);
  void (*finalize)(void*);
};

static const char kNoHandle[] = "model_buf is NULL: initialize() failed or was not called";

/* The answer to a call that reaches no engine, in a buffer from malloc() as free_buffer() expects. */
static int reply_unavailable(void** output_data, int* output_size) {
  if (!output_data || !output_size) return PROCESSOR_INTERNAL_ERROR;
  const size_t size = strlen(kNoHandle);
  char* buffer = malloc(size + 1);
  if (buffer) memcpy(buffer, kNoHandle, size + 1);
  *output_data = buffer;
  *output_size = buffer ? (int)size : 0;
  return PROCESSOR_UNAVAILABLE;
}

/* Until the engine is loaded, calls land on these: no handle can exist yet. */
static int unloaded_process(void* model_buf, const void* input_data, int input_size, void** output_data,
                            int* output_size) {
  return reply_unavailable(output_data, output_size);
}
static int unloaded_process_as(void* model_buf, int format, const void* input_data, int input_size,
                               void** output_data, int* output_size) {
  return reply_unavailable(output_data, output_size);
}
static int unloaded_info(void* model_buf, void** output_data, int* output_size) {
  return reply_unavailable(output_data, output_size);
}
static int unloaded_rollback(void* model_buf, long long version) { return PROCESSOR_UNAVAILABLE; }
static void unloaded_finalize(void* model_buf) {}

/* Written once, under load_once, before initialize() can return a handle. */
static struct engine engine = {NULL, unloaded_process, unloaded_process_as, unloaded_info, unloaded_info, unloaded_rollback,
                               unloaded_finalize};
static char load_error[1024]; /* why the engine could not be loaded */
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void log_line(const char* level, const char* message) {
  fprintf(stderr, "[processor %s] %s\n", level, message); /* one call per line: no interleaving */
}

/* 1 to load the engine with RTLD_DEEPBIND, 0 without; *why says what decided. */
static int wants_deepbind(const char** why) {
  const char* forced = getenv("PROCESSOR_ISOLATION");
  if (forced && strcmp(forced, "none") == 0) {
    *why = "PROCESSOR_ISOLATION=none: TensorFlow binds to libraries the host already loaded";
    return 0;
  }
  if (dlsym(RTLD_DEFAULT, "__asan_init") || dlsym(RTLD_DEFAULT, "__tsan_init") || dlsym(RTLD_DEFAULT, "__msan_init")) {
    *why = "the host runs under a sanitizer, which refuses RTLD_DEEPBIND: TensorFlow binds to libraries the host "
           "already loaded";
    return 0;
  }
  if (forced && *forced && strcmp(forced, "deepbind") != 0) {
    *why = "PROCESSOR_ISOLATION is neither 'deepbind' nor 'none' and was ignored";
  } else {
    *why = "RTLD_DEEPBIND: isolated from the host's libraries";
  }
  return 1;
}

/* <directory of this library>/ENGINE_FILE into `path`; 0, or -1. */
static int engine_path(char* path, size_t size) {
  Dl_info info;
  if (!dladdr((void*)&engine_path, &info) || !info.dli_fname) return -1;
  const char* slash = strrchr(info.dli_fname, '/');
  const int written = slash ? snprintf(path, size, "%.*s/%s", (int)(slash - info.dli_fname), info.dli_fname, ENGINE_FILE)
                            : snprintf(path, size, "./%s", ENGINE_FILE);
  return written > 0 && (size_t)written < size ? 0 : -1;
}

static void load_engine(void) {
  char path[4096];
  if (engine_path(path, sizeof path) != 0) {
    snprintf(load_error, sizeof load_error, "cannot locate %s next to libserving_processor.so", ENGINE_FILE);
    return;
  }
  const char* why = "";
  const int deepbind = wants_deepbind(&why);
  /* TensorFlow's INFO lines (its CPU banner, each SavedModel reader step) stay out of the host's log:
   * TensorFlow reads TF_CPP_MIN_LOG_LEVEL once, as its libraries load. A value the host set wins
   * (TF_CPP_MIN_LOG_LEVEL=0 shows them); the library's own lines are not TensorFlow's. */
  setenv(TF_LOG_LEVEL_VARIABLE, QUIET_TF_LOG_LEVEL, 0);
  void* library = dlopen(path, RTLD_NOW | RTLD_LOCAL | (deepbind ? RTLD_DEEPBIND : 0));
  if (!library) {
    snprintf(load_error, sizeof load_error, "cannot load the engine: %s", dlerror());
    return;
  }
  struct engine found;
  found.initialize = (void* (*)(const char*, const char*, int*))dlsym(library, "initialize");
  found.process = (int (*)(void*, const void*, int, void**, int*))dlsym(library, "process");
  found.process_as = (int (*)(void*, int, const void*, int, void**, int*))dlsym(library, "process_as");
  found.get_serving_model_info = (int (*)(void*, void**, int*))dlsym(library, "get_serving_model_info");
  found.get_metrics = (int (*)(void*, void**, int*))dlsym(library, "get_metrics");
  found.rollback = (int (*)(void*, long long))dlsym(library, "rollback");
  found.finalize = (void (*)(void*))dlsym(library, "finalize");
  if (!found.initialize || !found.process || !found.process_as || !found.get_serving_model_info || !found.get_metrics || !found.rollback ||
      !found.finalize) {
    snprintf(load_error, sizeof load_error, "%s lacks a function of processor.h", path);
    return;
  }
  char message[600];
  snprintf(message, sizeof message, "loaded the engine %s (%s)", path, why);
  log_line("I", message);
  engine = found;
}

PROCESSOR_EXPORT void* initialize(const char* model_entry, const char* model_config, int* state) {
  pthread_once(&load_once, load_engine);
  if (!engine.initialize) {
    char message[1100];
    snprintf(message, sizeof message, "initialize failed: %s", load_error);
    log_line("E", message);
    if (state) *state = -1;
    return NULL;
  }
  return engine.initialize(model_entry, model_config, state);
}

PROCESSOR_EXPORT int process(void* model_buf, const void* input_data, int input_size, void** output_data,
                             int* output_size) {
  return engine.process(model_buf, input_data, input_size, output_data, output_size);
}

PROCESSOR_EXPORT int process_as(void* model_buf, int format, const void* input_data, int input_size,
                                void** output_data, int* output_size) {
  return engine.process_as(model_buf, format, input_data, input_size, output_data, output_size);
}

PROCESSOR_EXPORT int get_serving_model_info(void* model_buf, void** output_data, int* output_size) {
  return engine.get_serving_model_info(model_buf, output_data, output_size);
}

PROCESSOR_EXPORT int get_metrics(void* model_buf, void** output_data, int* output_size) {
  return engine.get_metrics(model_buf, output_data, output_size);
}

PROCESSOR_EXPORT int rollback(void* model_buf, long long version) { return engine.rollback(model_buf, version); }

PROCESSOR_EXPORT void free_buffer(void* buffer) { free(buffer); }

PROCESSOR_EXPORT void finalize(void* model_buf) { engine.finalize(model_buf); }

PROCESSOR_EXPORT const char* processor_libversion(void) { return PROCESSOR_VERSION; }

PROCESSOR_EXPORT int processor_libversion_number(void) { return PROCESSOR_VERSION_NUMBER; }
