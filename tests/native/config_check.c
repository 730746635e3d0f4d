/* Calls initialize() once per config file and expects every one to be refused (NULL, state -1), so
 * that a sanitizer build can check that refusing a config leaks and corrupts nothing.
 *
 *   config_check LIBRARY CONFIG.json...
 *
 * Prints "refused N of M" and exits 0 when every config was refused.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include "host_files.h"

typedef void* (*initialize_fn)(const char*, const char*, int*);
typedef void (*finalize_fn)(void*);

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s LIBRARY CONFIG.json...\n", argv[0]);
    return 2;
  }
  void* library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 1;
  }
  initialize_fn initialize_model = (initialize_fn)dlsym(library, "initialize");
  finalize_fn finalize_model = (finalize_fn)dlsym(library, "finalize");
  int refused = 0;
  for (int i = 2; i < argc; ++i) {
    long size = 0;
    char* config = read_file(argv[i], &size);
    if (!config) {
      fprintf(stderr, "cannot read %s\n", argv[i]);
      return 1;
    }
    int state = 12345;
    void* model = initialize_model("", config, &state);
    if (model == NULL && state == -1) {
      refused++;
    } else {
      fprintf(stderr, "config_check: %s was accepted (state %d)\n", argv[i], state);
      if (model) finalize_model(model);
    }
    free(config);
  }
  printf("refused %d of %d\n", refused, argc - 2);
  return refused == argc - 2 ? 0 : 1;
}
