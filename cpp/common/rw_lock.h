// A reader/writer lock for a read path that must stay cheap under concurrency: requests are the
// readers and take it on every run; a delta update is the rare writer.
//
// Each reader thread counts itself on its own cache line (no shared writes on the read path), then
// checks the writer flag; a writer raises the flag and waits until every reader count is zero. The
// seq_cst ordering on both sides (a Dekker handshake) guarantees that either the reader sees the flag
// and backs off, or the writer sees the reader and waits. Readers back off while a writer waits, so a
// writer never starves behind a stream of requests.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "common/thread_slot.h"

namespace processor {

class WriterPreferringLock {
 public:
  WriterPreferringLock() = default;
  WriterPreferringLock(const WriterPreferringLock&) = delete;
  WriterPreferringLock& operator=(const WriterPreferringLock&) = delete;

  void lock_shared() {
    std::atomic<int64_t>& readers = slots_[ThreadSlot()].readers;
    for (;;) {
      readers.fetch_add(1, std::memory_order_seq_cst);
      if (!writer_.load(std::memory_order_seq_cst)) return;
      readers.fetch_sub(1, std::memory_order_seq_cst);
      std::unique_lock<std::mutex> lock(wait_mutex_);
      writer_done_.wait(lock, [this] { return !writer_.load(std::memory_order_seq_cst); });
    }
  }

  void unlock_shared() { slots_[ThreadSlot()].readers.fetch_sub(1, std::memory_order_release); }

  void lock() {
    writer_mutex_.lock();  // one writer at a time
    writer_.store(true, std::memory_order_seq_cst);
    for (const Slot& slot : slots_) {
      while (slot.readers.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
    }
  }

  void unlock() {
    {
      std::lock_guard<std::mutex> lock(wait_mutex_);
      writer_.store(false, std::memory_order_seq_cst);
    }
    writer_done_.notify_all();
    writer_mutex_.unlock();
  }

 private:
  struct alignas(64) Slot {
    std::atomic<int64_t> readers{0};
  };

  std::array<Slot, kThreadSlots> slots_;
  std::atomic<bool> writer_{false};
  std::mutex writer_mutex_;
  std::mutex wait_mutex_;
  std::condition_variable writer_done_;
};

}  // namespace processor
