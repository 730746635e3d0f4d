/* The engine's malloc family: the process's own, whatever the host replaced it with.
 *
 * The shim (cpp/shim) loads the engine with RTLD_DEEPBIND, so that TensorFlow binds to its own protobuf,
 * re2 and zlib rather than the host's. That would also bind TensorFlow's and the engine's malloc() and
 * free() to libc's first, while libc's and libstdc++'s own allocations (strdup, realpath, __cxa_demangle,
 * operator new) keep going to the host's malloc replacement (jemalloc, tcmalloc): a pointer from one freed
 * by the other corrupts the heap. These definitions come first in the engine's deep-bound scope and
 * forward to the malloc the process resolves everywhere else, so that the whole process keeps one heap
 * and a host may free() what the library returns. In the host's namespace (no RTLD_DEEPBIND) the
 * process's own definitions come first and these are never called.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stddef.h>
#include <stdlib.h>

#define EXPORT __attribute__((visibility("default")))

struct allocator {
  void* (*malloc)(size_t);
  void (*free)(void*);
  void* (*calloc)(size_t, size_t);
  void* (*realloc)(void*, size_t);
  int (*posix_memalign)(void**, size_t, size_t);
  void* (*aligned_alloc)(size_t, size_t);
  void* (*memalign)(size_t, size_t);
  void* (*valloc)(size_t);
  void* (*pvalloc)(size_t);
  size_t (*malloc_usable_size)(void*);
};

static struct allocator process_allocator;
static int resolved; /* 0, then 1 once process_allocator is complete (release/acquire) */

/* The process's definition of `name`: the first in the main program's global scope, the order in which
 * libc's own references were bound (the executable, LD_PRELOAD, then the libraries in load order);
 * libc's when that is this file's own. dlopen() and dlsym() allocate through the process's malloc,
 * never through these, so they may run from inside one. */
static void* lookup(void* program, void* libc, const char* name, void* own) {
  void* found = program ? dlsym(program, name) : NULL;
  return found && found != own ? found : dlsym(libc, name);
}

static const struct allocator* resolve(void) {
  if (__atomic_load_n(&resolved, __ATOMIC_ACQUIRE)) return &process_allocator;
  /* Several threads may get here at once: each finds the same functions. */
  void* program = dlopen(NULL, RTLD_LAZY | RTLD_NOLOAD);
  void* libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
  struct allocator a;
#define FIND(name, type) a.name = (type)lookup(program, libc, #name, (void*)&name)
  FIND(malloc, void* (*)(size_t));
  FIND(free, void (*)(void*));
  FIND(calloc, void* (*)(size_t, size_t));
  FIND(realloc, void* (*)(void*, size_t));
  FIND(posix_memalign, int (*)(void**, size_t, size_t));
  FIND(aligned_alloc, void* (*)(size_t, size_t));
  FIND(memalign, void* (*)(size_t, size_t));
  FIND(valloc, void* (*)(size_t));
  FIND(pvalloc, void* (*)(size_t));
  FIND(malloc_usable_size, size_t (*)(void*));
#undef FIND
  if (program) dlclose(program);
  if (libc) dlclose(libc);
  process_allocator = a;
  __atomic_store_n(&resolved, 1, __ATOMIC_RELEASE);
  return &process_allocator;
}

EXPORT void* malloc(size_t size) { return resolve()->malloc(size); }
EXPORT void free(void* p) { resolve()->free(p); }
EXPORT void* calloc(size_t count, size_t size) { return resolve()->calloc(count, size); }
EXPORT void* realloc(void* p, size_t size) { return resolve()->realloc(p, size); }
EXPORT int posix_memalign(void** out, size_t alignment, size_t size) {
  return resolve()->posix_memalign(out, alignment, size);
}
EXPORT void* aligned_alloc(size_t alignment, size_t size) { return resolve()->aligned_alloc(alignment, size); }
EXPORT void* memalign(size_t alignment, size_t size) { return resolve()->memalign(alignment, size); }
EXPORT void* valloc(size_t size) { return resolve()->valloc(size); }
EXPORT void* pvalloc(size_t size) { return resolve()->pvalloc(size); }
EXPORT size_t malloc_usable_size(void* p) { return resolve()->malloc_usable_size(p); }
