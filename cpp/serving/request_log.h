// Request logging: a sample of the requests a model answered with 200, appended to a TFRecord file of
// serialized PredictRequests (so the file is a warmup file as it is), rotated by size.
//
// The request thread only draws a random number and, for a sampled request, copies its bytes into a
// bounded queue; a writer thread does the file I/O. When the queue is full the request is not logged
// (counted as dropped): logging never makes a request wait on a disk.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"

namespace processor {

struct RequestLogOptions {
  std::string path;
  double sample_rate = 0.01;     // fraction of 200 responses logged
  int64_t max_records = 10000;   // per file: the file rotates when it holds this many
  int64_t max_bytes = 64 << 20;  // per file: or this many bytes
  int backups = 1;               // rotated files kept: path.1 (newest) .. path.<backups>
};

class RequestLog {
 public:
  RequestLog() = default;
  ~RequestLog() { Stop(); }
  RequestLog(const RequestLog&) = delete;
  RequestLog& operator=(const RequestLog&) = delete;

  // Starts logging into a new file at options.path; an existing file there is rotated first. Stops
  // any logging already running.
  Status Start(const RequestLogOptions& options);
  // Writes what is queued, closes the file, and stops sampling.
  void Stop();

  // On a request thread, after a 200.
  void Offer(const void* request, size_t size) {
    const uint64_t threshold = threshold_.load(std::memory_order_relaxed);
    if (threshold != 0 && NextRandom() < threshold) Enqueue(request, size);
  }

  int64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 private:
  static uint32_t NextRandom();
  void Enqueue(const void* request, size_t size);
  void WriteLoop();
  Status Rotate();

  std::atomic<uint64_t> threshold_{0};  // sample when a 32-bit random number is below it; 0: off
  std::atomic<int64_t> dropped_{0};

  std::mutex mutex_;  // guards the queue and stopping_
  std::condition_variable wake_;
  std::deque<std::string> queue_;
  size_t queued_bytes_ = 0;
  bool stopping_ = false;
  std::thread writer_;

  // The writer thread's (and Start's, before the thread runs).
  RequestLogOptions options_;
  std::FILE* file_ = nullptr;
  int64_t records_in_file_ = 0, bytes_in_file_ = 0;
};

}  // namespace processor
