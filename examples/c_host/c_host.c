/* A plain C host: dlopen()s libserving_processor.so, initializes it from a JSON config file, sends
 * request files, and prints (and optionally saves) the responses. No Python, no TensorFlow headers.
 *
 *   c_host LIBRARY CONFIG.json [--out DIR] REQUEST.bin...
 *   c_host LIBRARY CONFIG.json --bench REQUEST.bin [SECONDS [THREADS [IDLE_US]]]
 *
 * For each request it prints "REQUEST -> CODE, N bytes" (and the message when CODE != 200) and, with
 * --out, writes the response to DIR/<index>.bin. It also prints the signature (an empty request) and
 * the size of the ServingModelInfo, then finalizes. Exit status: 0 when every call behaved, 1 otherwise.
 * --bench sends one request file from THREADS threads (default 1) for SECONDS (default 5) and prints
 * requests/s, latency percentiles and the mean; any answer but 200 is an error and fails the run. With
 * IDLE_US, each thread sleeps that many microseconds between requests (not timed), as a server's threads
 * wait for the network: a request then finds the caches and TensorFlow's threads cold.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "processor.h"

typedef void* (*initialize_fn)(const char*, const char*, int*);
typedef int (*process_fn)(void*, const void*, int, void**, int*);
typedef int (*info_fn)(void*, void**, int*);
typedef void (*free_fn)(void*);
typedef void (*finalize_fn)(void*);

static char* read_file(const char* path, long* size) {
  FILE* f = fopen(path, "rb");
  if (!f) {
    perror(path);
    return NULL;
  }
  fseek(f, 0, SEEK_END);
  *size = ftell(f);
  rewind(f);
  char* data = malloc(*size + 1);
  if (data && fread(data, 1, *size, f) != (size_t)*size) {
    free(data);
    data = NULL;
  }
  if (data) data[*size] = '\0';
  fclose(f);
  return data;
}

static int write_file(const char* path, const void* data, int size) {
  FILE* f = fopen(path, "wb");
  if (!f) {
    perror(path);
    return 0;
  }
  int ok = fwrite(data, 1, size, f) == (size_t)size;
  fclose(f);
  return ok;
}

static double now_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* One --bench thread: calls process() until the deadline, keeping every latency. */
typedef struct {
  process_fn process_request;
  free_fn free_response;
  void* model;
  const char* request;
  int request_size;
  double deadline;
  long idle_us;
  double* latencies;
  long count, capacity, errors;
} bench_thread;

static void* bench_loop(void* arg) {
  bench_thread* b = arg;
  while (now_seconds() < b->deadline) {
    void* output = NULL;
    int output_size = 0;
    const double started = now_seconds();
    const int code = b->process_request(b->model, b->request, b->request_size, &output, &output_size);
    const double elapsed = now_seconds() - started;
    b->free_response(output);
    if (code != PROCESSOR_OK) {
      b->errors++;
      continue;
    }
    if (b->count == b->capacity) {
      b->capacity = b->capacity ? 2 * b->capacity : 4096;
      double* grown = realloc(b->latencies, b->capacity * sizeof(double));
      if (!grown) break;
      b->latencies = grown;
    }
    b->latencies[b->count++] = elapsed;
    if (b->idle_us > 0) {
      const struct timespec idle = {b->idle_us / 1000000, (b->idle_us % 1000000) * 1000};
      nanosleep(&idle, NULL);
    }
  }
  return NULL;
}

static int compare_doubles(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

/* Prints requests/s and latency percentiles; returns the number of failed calls. */
static long bench(process_fn process_request, free_fn free_response, void* model, const char* request,
                  int request_size, double seconds, int threads, long idle_us) {
  bench_thread* workers = calloc(threads, sizeof(bench_thread));
  pthread_t* ids = calloc(threads, sizeof(pthread_t));
  if (!workers || !ids) return 1;
  const double started = now_seconds();
  for (int t = 0; t < threads; ++t) {
    workers[t] = (bench_thread){process_request, free_response, model, request, request_size, started + seconds,
                                idle_us, NULL, 0, 0, 0};
    pthread_create(&ids[t], NULL, bench_loop, &workers[t]);
  }
  long total = 0, errors = 0;
  for (int t = 0; t < threads; ++t) {
    pthread_join(ids[t], NULL);
    total += workers[t].count;
    errors += workers[t].errors;
  }
  const double elapsed = now_seconds() - started;
  double* all = malloc((total ? total : 1) * sizeof(double));
  long n = 0;
  for (int t = 0; t < threads; ++t) {
    if (all) memcpy(all + n, workers[t].latencies, workers[t].count * sizeof(double));
    n += workers[t].count;
    free(workers[t].latencies);
  }
  if (all && total) {
    qsort(all, total, sizeof(double), compare_doubles);
    double sum = 0;
    for (long i = 0; i < total; ++i) sum += all[i];
    printf("bench: %ld requests in %.2f s on %d thread(s): %.0f requests/s, p50 %.3f ms, p99 %.3f ms, "
           "max %.3f ms, mean %.3f ms, %ld errors\n", total, elapsed, threads, total / elapsed, all[total / 2] * 1e3,
           all[total * 99 / 100] * 1e3, all[total - 1] * 1e3, sum / total * 1e3, errors);
  } else {
    printf("bench: no request answered 200 (%ld errors)\n", errors);
  }
  free(all);
  free(workers);
  free(ids);
  return errors + (total == 0);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s LIBRARY CONFIG.json [--out DIR] REQUEST.bin...\n"
                    "       %s LIBRARY CONFIG.json --bench REQUEST.bin [SECONDS [THREADS [IDLE_US]]]\n", argv[0],
            argv[0]);
    return 2;
  }
  const char* out_dir = NULL;
  const char* bench_request = NULL;
  double bench_seconds = 5;
  int bench_threads = 1;
  long bench_idle_us = 0;
  int first_request = 3;
  if (argc > 4 && strcmp(argv[3], "--out") == 0) {
    out_dir = argv[4];
    first_request = 5;
  } else if (argc > 4 && strcmp(argv[3], "--bench") == 0) {
    bench_request = argv[4];
    if (argc > 5) bench_seconds = atof(argv[5]);
    if (argc > 6) bench_threads = atoi(argv[6]);
    if (argc > 7) bench_idle_us = atol(argv[7]);
    if (bench_seconds <= 0 || bench_threads < 1 || bench_idle_us < 0) {
      fprintf(stderr, "--bench: SECONDS must be > 0, THREADS >= 1 and IDLE_US >= 0\n");
      return 2;
    }
    first_request = argc;
  }

  void* library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 1;
  }
  initialize_fn initialize_model = (initialize_fn)dlsym(library, "initialize");
  process_fn process_request = (process_fn)dlsym(library, "process");
  info_fn model_info = (info_fn)dlsym(library, "get_serving_model_info");
  free_fn free_response = (free_fn)dlsym(library, "free_buffer");
  finalize_fn finalize_model = (finalize_fn)dlsym(library, "finalize");
  if (!initialize_model || !process_request || !model_info || !free_response || !finalize_model) {
    fprintf(stderr, "dlsym: the library lacks part of the processor ABI\n");
    return 1;
  }

  long config_size = 0;
  char* config = read_file(argv[2], &config_size);
  if (!config) return 1;
  int state = -1;
  void* model = initialize_model("", config, &state);
  free(config);
  printf("initialize -> state %d\n", state);
  if (!model || state != 0) return 1;

  int failures = 0;
  void* output = NULL;
  int output_size = 0;
  int code = process_request(model, "", 0, &output, &output_size);
  printf("signature -> %d: %.*s\n", code, output_size, (const char*)output);
  free_response(output);
  failures += code != PROCESSOR_OK;

  for (int i = first_request; i < argc; ++i) {
    long size = 0;
    char* request = read_file(argv[i], &size);
    if (!request) return 1;
    code = process_request(model, request, (int)size, &output, &output_size);
    free(request);
    printf("%s -> %d, %d bytes", argv[i], code, output_size);
    if (code != PROCESSOR_OK) printf(": %.*s", output_size, (const char*)output);
    printf("\n");
    if (out_dir) {
      char path[4096];
      snprintf(path, sizeof(path), "%s/%d.bin", out_dir, i - first_request);
      if (!write_file(path, output, output_size)) failures++;
    }
    free_response(output);
  }

  if (bench_request) {
    long size = 0;
    char* request = read_file(bench_request, &size);
    if (!request) return 1;
    failures += bench(process_request, free_response, model, request, (int)size, bench_seconds, bench_threads,
                      bench_idle_us) != 0;
    free(request);
  }

  code = model_info(model, &output, &output_size);
  printf("get_serving_model_info -> %d, %d bytes\n", code, output_size);
  if (out_dir && code == PROCESSOR_OK) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/model_info.bin", out_dir);
    if (!write_file(path, output, output_size)) failures++;
  }
  free_response(output);
  failures += code != PROCESSOR_OK;

  finalize_model(model);
  printf("finalize -> done\n");
  fflush(stdout);
  return failures ? 1 : 0;
}
