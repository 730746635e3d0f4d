/* Calls initialize() once per config file and expects every one to be refused (NULL, state -1), so
 * that a sanitizer build can check that refusing a config leaks and corrupts nothing.
 *
 *   config_check LIBRARY CONFIG.json...
 *
 * Prints "refused N of M" and exits 0 when every config was refused.
 */
#include <stdio.h>
#include <stdlib.h>

#include "sanitizer_host.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s LIBRARY CONFIG.json...\n", argv[0]);
    return 2;
  }
  struct processor_abi abi;
  if (load_abi(argv[1], &abi) != 0) return 1;
  int refused = 0;
  for (int i = 2; i < argc; ++i) {
    long size = 0;
    char* config = read_file(argv[i], &size);
    if (!config) {
      fprintf(stderr, "cannot read %s\n", argv[i]);
      return 1;
    }
    int state = 12345;
    void* model = abi.initialize("", config, &state);
    if (model == NULL && state == -1) {
      refused++;
    } else {
      fprintf(stderr, "config_check: %s was accepted (state %d)\n", argv[i], state);
      if (model) abi.finalize(model);
    }
    free(config);
  }
  printf("refused %d of %d\n", refused, argc - 2);
  return refused == argc - 2 ? 0 : 1;
}
