/* What the sanitizer hosts in tests/native share: the library's ABI as a host dlopen()s it, and
 * reading their input files. */
#ifndef PROCESSOR_TESTS_NATIVE_SANITIZER_HOST_H_
#define PROCESSOR_TESTS_NATIVE_SANITIZER_HOST_H_

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

struct processor_abi {
  void* (*initialize)(const char*, const char*, int*);
  int (*process)(void*, const void*, int, void**, int*);
  int (*rollback)(void*, long long);
  void (*finalize)(void*);
};

/* dlopen()s the library and resolves the functions; 0, or -1 after saying why on stderr. */
static int load_abi(const char* library_path, struct processor_abi* abi) {
  void* library = dlopen(library_path, RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return -1;
  }
  abi->initialize = (void* (*)(const char*, const char*, int*))dlsym(library, "initialize");
  abi->process = (int (*)(void*, const void*, int, void**, int*))dlsym(library, "process");
  abi->rollback = (int (*)(void*, long long))dlsym(library, "rollback");
  abi->finalize = (void (*)(void*))dlsym(library, "finalize");
  if (!abi->initialize || !abi->process || !abi->rollback || !abi->finalize) {
    fprintf(stderr, "%s lacks a function of the ABI\n", library_path);
    return -1;
  }
  return 0;
}

/* The whole file, NUL-terminated, from malloc(); NULL if unreadable. */
static char* read_file(const char* path, long* size) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
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

#endif  /* PROCESSOR_TESTS_NATIVE_SANITIZER_HOST_H_ */
