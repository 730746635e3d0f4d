#include "common/rw_lock.h"

namespace processor {

int WriterPreferringLock::ThreadSlot() {
  static std::atomic<int> next{0};
  thread_local const int slot = next.fetch_add(1, std::memory_order_relaxed) % kSlots;
  return slot;
}

}  // namespace processor
