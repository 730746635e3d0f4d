// A small number for the calling thread, for counters that the request path bumps on every request
// and that must not share a cache line with other threads' (the readers of a lock or of a grace
// period). Threads beyond kThreadSlots share slots, which such counters allow.
#pragma once

namespace processor {

constexpr int kThreadSlots = 64;

// The calling thread's slot in [0, kThreadSlots), fixed for its lifetime. Not inline: a thread_local
// in a shared library costs a __tls_get_addr call at each use, so callers ask once per request.
int ThreadSlot();

}  // namespace processor
