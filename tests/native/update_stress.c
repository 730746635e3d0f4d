/* Stress host for sanitizer runs: cycles of initialize -> THREADS threads calling process() while the
 * model updates itself (the test writes new versions meanwhile) and rollback() runs -> finalize(), so
 * that finalize lands while polling and while loads are in progress.
 *
 *   update_stress LIBRARY CONFIG.json REQUEST.bin CYCLES MILLISECONDS_PER_CYCLE THREADS
 *
 * Prints "cycles C requests R failures F" and exits 0 when every request got 200.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "processor.h"
#include "sanitizer_host.h"

static struct processor_abi abi;
static char* request;
static long request_size;

struct worker {
  pthread_t thread;
  void* model;
  double deadline;
  long requests;
  long failures;
};

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void* serve(void* arg) {
  struct worker* w = arg;
  while (now_ms() < w->deadline) {
    void* out = NULL;
    int out_size = 0;
    int code = abi.process(w->model, request, (int)request_size, &out, &out_size);
    free(out);
    w->requests++;
    if (code != PROCESSOR_OK) w->failures++;
  }
  return NULL;
}

int main(int argc, char** argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: %s LIBRARY CONFIG.json REQUEST.bin CYCLES MILLISECONDS_PER_CYCLE THREADS\n", argv[0]);
    return 2;
  }
  if (load_abi(argv[1], &abi) != 0) return 1;
  long config_size = 0;
  char* config = read_file(argv[2], &config_size);
  request = read_file(argv[3], &request_size);
  if (!config || !request) {
    fprintf(stderr, "cannot read %s or %s\n", argv[2], argv[3]);
    return 1;
  }
  const int cycles = atoi(argv[4]), threads = atoi(argv[6]);
  const double period = atof(argv[5]);
  long requests = 0, failures = 0;
  struct worker* workers = calloc(threads, sizeof(struct worker));
  for (int cycle = 0; cycle < cycles; ++cycle) {
    int state = -1;
    void* model = abi.initialize("", config, &state);
    if (!model || state != 0) {
      fprintf(stderr, "initialize failed in cycle %d\n", cycle);
      return 1;
    }
    for (int i = 0; i < threads; ++i) {
      workers[i] = (struct worker){.model = model, .deadline = now_ms() + period};
      pthread_create(&workers[i].thread, NULL, serve, &workers[i]);
    }
    if (cycle % 2) abi.rollback(model, -1);  /* 200, or 400 when there is no earlier version yet */
    for (int i = 0; i < threads; ++i) {
      pthread_join(workers[i].thread, NULL);
      requests += workers[i].requests;
      failures += workers[i].failures;
    }
    abi.finalize(model);  /* the poller may be mid-load right now */
  }
  printf("cycles %d requests %ld failures %ld\n", cycles, requests, failures);
  free(workers);
  free(config);
  free(request);
  return failures ? 1 : 0;
}
