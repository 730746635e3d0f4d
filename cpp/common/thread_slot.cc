#include "common/thread_slot.h"

#include <atomic>

namespace processor {

int ThreadSlot() {
  static std::atomic<int> next{0};
  thread_local const int slot = next.fetch_add(1, std::memory_order_relaxed) % kThreadSlots;
  return slot;
}

}  // namespace processor
