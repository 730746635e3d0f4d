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

/* What each function below calls: until the first call resolves them, functions that resolve and then
 * call (TensorFlow's static initializers allocate before any constructor of this file could run); then
 * the process's own. Each pointer is written once, atomically, so a call sees either. */
static void* first_malloc(size_t);
static void first_free(void*);
static void* first_calloc(size_t, size_t);
static void* first_realloc(void*, size_t);
static int first_posix_memalign(void**, size_t, size_t);
static void* first_aligned_alloc(size_t, size_t);
static void* first_memalign(size_t, size_t);
static void* first_valloc(size_t);
static void* first_pvalloc(size_t);
static size_t first_malloc_usable_size(void*);
static struct allocator process_allocator = {first_malloc, first_free, first_calloc, first_realloc,
                                             first_posix_memalign, first_aligned_alloc, first_memalign,
                                             first_valloc, first_pvalloc, first_malloc_usable_size};

/* The process's definition of `name`: the first in the main program's global scope, the order in which
 * libc's own references were bound (the executable, LD_PRELOAD, then the libraries in load order);
 * libc's when that is this file's own. dlopen() and dlsym() allocate through the process's malloc,
 * never through these, so they may run from inside one. */
static void* lookup(void* program, void* libc, const char* name, void* own) {
  void* found = program ? dlsym(program, name) : NULL;
  return found && found != own ? found : dlsym(libc, name);
}

/* Finds the process's functions and installs them; several threads may get here at once: each finds
 * the same functions. Returns them. */
static const struct allocator* resolve(void) {
  static struct allocator found;
  static int resolved; /* 0, then 1 once `found` is complete (release/acquire) */
  if (__atomic_load_n(&resolved, __ATOMIC_ACQUIRE)) return &found;
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
  found = a;
  __atomic_store_n(&resolved, 1, __ATOMIC_RELEASE);
#define INSTALL(name) __atomic_store_n(&process_allocator.name, a.name, __ATOMIC_RELAXED)
  INSTALL(malloc);
  INSTALL(free);
  INSTALL(calloc);
  INSTALL(realloc);
  INSTALL(posix_memalign);
  INSTALL(aligned_alloc);
  INSTALL(memalign);
  INSTALL(valloc);
  INSTALL(pvalloc);
  INSTALL(malloc_usable_size);
#undef INSTALL
  return &found;
}

static void* first_malloc(size_t size) { return resolve()->malloc(size); }
static void first_free(void* p) { resolve()->free(p); }
static void* first_calloc(size_t count, size_t size) { return resolve()->calloc(count, size); }
static void* first_realloc(void* p, size_t size) { return resolve()->realloc(p, size); }
static int first_posix_memalign(void** out, size_t alignment, size_t size) {
  return resolve()->posix_memalign(out, alignment, size);
}
static void* first_aligned_alloc(size_t alignment, size_t size) { return resolve()->aligned_alloc(alignment, size); }
static void* first_memalign(size_t alignment, size_t size) { return resolve()->memalign(alignment, size); }
static void* first_valloc(size_t size) { return resolve()->valloc(size); }
static void* first_pvalloc(size_t size) { return resolve()->pvalloc(size); }
static size_t first_malloc_usable_size(void* p) { return resolve()->malloc_usable_size(p); }

/* Once resolved, each of these is one indirect jump, 6 instructions fewer than checking for resolution on
 * every call: the instructions a batch-1 request executes through the shim beyond the engine called
 * directly fell from 2,170 to 479 (benchmarks/embedding.py --callgrind). */
#define CALL(name) __atomic_load_n(&process_allocator.name, __ATOMIC_RELAXED)
EXPORT void* malloc(size_t size) { return CALL(malloc)(size); }
EXPORT void free(void* p) { CALL(free)(p); }
EXPORT void* calloc(size_t count, size_t size) { return CALL(calloc)(count, size); }
EXPORT void* realloc(void* p, size_t size) { return CALL(realloc)(p, size); }
EXPORT int posix_memalign(void** out, size_t alignment, size_t size) {
  return CALL(posix_memalign)(out, alignment, size);
}
EXPORT void* aligned_alloc(size_t alignment, size_t size) { return CALL(aligned_alloc)(alignment, size); }
EXPORT void* memalign(size_t alignment, size_t size) { return CALL(memalign)(alignment, size); }
EXPORT void* valloc(size_t size) { return CALL(valloc)(size); }
EXPORT void* pvalloc(size_t size) { return CALL(pvalloc)(size); }
EXPORT size_t malloc_usable_size(void* p) { return CALL(malloc_usable_size)(p); }
#undef CALL
