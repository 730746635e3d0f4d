/* A plain C host: dlopen()s libserving_processor.so, initializes it from a JSON config file, sends
 * request files, and prints (and optionally saves) the responses. No Python, no TensorFlow headers.
 *
 *   c_host LIBRARY CONFIG.json [--out DIR] REQUEST.bin...
 *
 * For each request it prints "REQUEST -> CODE, N bytes" (and the message when CODE != 200) and, with
 * --out, writes the response to DIR/<index>.bin. It also prints the signature (an empty request) and
 * the size of the ServingModelInfo, then finalizes. Exit status: 0 when every call behaved, 1 otherwise.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s LIBRARY CONFIG.json [--out DIR] REQUEST.bin...\n", argv[0]);
    return 2;
  }
  const char* out_dir = NULL;
  int first_request = 3;
  if (argc > 4 && strcmp(argv[3], "--out") == 0) {
    out_dir = argv[4];
    first_request = 5;
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
