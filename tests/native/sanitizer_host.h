/* What the sanitizer hosts in tests/native share. */
#ifndef PROCESSOR_TESTS_NATIVE_HOST_FILES_H_
#define PROCESSOR_TESTS_NATIVE_HOST_FILES_H_

#include <stdio.h>
#include <stdlib.h>

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

#endif  /* PROCESSOR_TESTS_NATIVE_HOST_FILES_H_ */
