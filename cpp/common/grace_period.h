// GracePeriod: lets a writer wait until no reader can still see what it replaced, without readers
// ever taking a lock (the scheme of Linux's sleepable RCU).
//
// A reader counts itself, on its thread's own cache line, under the parity of the current epoch, and
// checks that the epoch did not move meanwhile (else it recounts under the new one). A writer that has
// published a replacement moves the epoch on and waits until the old parity's counts are zero: every
// reader that might have read the replaced object entered before the move, and so counted under the
// old parity, and readers entering after it count under the new one and never see the replaced
// object. The seq_cst ordering on both sides is what makes "entered before the move" and "saw the old
// object" coincide.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "common/logging.h"
#include "common/thread_slot.h"

namespace processor {

class GracePeriod {
 public:
  // What a reader hands back to Exit(): where it counted itself.
  struct ReadToken {
    int slot;
    int parity;
  };

  GracePeriod() = default;
  GracePeriod(const GracePeriod&) = delete;
  GracePeriod& operator=(const GracePeriod&) = delete;

  ReadToken Enter() {
    const int slot = ThreadSlot();
    for (;;) {
      const uint64_t epoch = epoch_.load(std::memory_order_seq_cst);
      std::atomic<int64_t>& readers = slots_[slot].readers[epoch & 1];
      readers.fetch_add(1, std::memory_order_seq_cst);
      if (epoch_.load(std::memory_order_seq_cst) == epoch) return {slot, static_cast<int>(epoch & 1)};
      readers.fetch_sub(1, std::memory_order_release);  // a writer moved the epoch in between
    }
  }

  // The reader's reads are done: release ordering hands them to the writer that waits for this count.
  void Exit(ReadToken token) {
    slots_[token.slot].readers[token.parity].fetch_sub(1, std::memory_order_release);
  }

  // Returns once every reader that entered before the call has exited. Must not be called by a reader
  // (it would wait for itself). Readers are requests, so the wait lasts as long as the longest request
  // in flight: yielding at first, then sleeping, and saying so in the log (naming `what` waits) every
  // ten seconds that it lasts, since a stuck request would hold the writer with it.
  void Synchronize(const char* what) {
    std::lock_guard<std::mutex> lock(writer_mutex_);  // one epoch move at a time
    const uint64_t old_parity = epoch_.fetch_add(1, std::memory_order_seq_cst) & 1;
    const auto started = std::chrono::steady_clock::now();
    auto next_report = started + std::chrono::seconds(10);
    for (const Slot& slot : slots_) {
      for (int spins = 0; slot.readers[old_parity].load(std::memory_order_seq_cst) != 0; ++spins) {
        if (spins < 100) {
          std::this_thread::yield();
          continue;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(50));
        const auto now = std::chrono::steady_clock::now();
        if (now >= next_report) {
          next_report = now + std::chrono::seconds(10);
          const auto waited = std::chrono::duration_cast<std::chrono::seconds>(now - started).count();
          Log(LogLevel::kWarning,
              std::string(what) + " has waited " + std::to_string(waited) + " s for requests that began before it");
        }
      }
    }
  }

 private:
  struct alignas(64) Slot {
    std::atomic<int64_t> readers[2] = {{0}, {0}};
  };

  std::atomic<uint64_t> epoch_{0};
  std::array<Slot, kThreadSlots> slots_;
  std::mutex writer_mutex_;
};

}  // namespace processor
