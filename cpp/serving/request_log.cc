#include "serving/request_log.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <functional>

#include "common/logging.h"
#include "common/tfrecord.h"

namespace processor {
namespace {

// Bounds on what waits for the writer: beyond them a sampled request is dropped, not waited for.
constexpr size_t kMaxQueuedRequests = 4096;
constexpr size_t kMaxQueuedBytes = 64 << 20;

Status ErrnoStatus(const std::string& what, const std::string& path) {
  return Status::Internal("request_log: cannot " + what + " " + path + ": " + std::strerror(errno));
}

}  // namespace

uint32_t RequestLog::NextRandom() {
  // xorshift32, one state per thread: sampling takes no lock and shares no cache line.
  thread_local uint32_t state = 0x9E3779B9u ^ static_cast<uint32_t>(std::hash<std::thread::id>()(std::this_thread::get_id()));
  state ^= state << 13;
  state ^= state >> 17;
  state ^= state << 5;
  return state;
}

Status RequestLog::Start(const RequestLogOptions& options) {
  Stop();
  options_ = options;
  PROCESSOR_RETURN_IF_ERROR(Rotate());
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = false;
  }
  writer_ = std::thread(&RequestLog::WriteLoop, this);
  const double rate = std::fmin(std::fmax(options.sample_rate, 0.0), 1.0);
  threshold_.store(static_cast<uint64_t>(std::ldexp(rate, 32)), std::memory_order_relaxed);
  return Status::Ok();
}

void RequestLog::Stop() {
  threshold_.store(0, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (writer_.joinable()) writer_.join();
  if (file_) {
    std::fclose(file_);
    file_ = nullptr;
    if (dropped() > 0) {
      Log(LogLevel::kWarning, "request_log: " + std::to_string(dropped()) + " sampled requests were not logged (the "
                                  "writer fell behind)");
    }
  }
}

void RequestLog::Enqueue(const void* request, size_t size) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!stopping_ && queue_.size() < kMaxQueuedRequests && queued_bytes_ + size <= kMaxQueuedBytes) {
      queue_.emplace_back(static_cast<const char*>(request), size);
      queued_bytes_ += size;
    } else {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  wake_.notify_one();
}

void RequestLog::WriteLoop() {
  std::deque<std::string> batch;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued is written
      batch.swap(queue_);
      queued_bytes_ = 0;
    }
    for (const std::string& record : batch) {
      unsigned char header[tfrecord::kHeaderBytes], footer[tfrecord::kFooterBytes];
      tfrecord::EncodeHeader(record.size(), header);
      tfrecord::EncodeFooter(record.data(), record.size(), footer);
      if (!file_ || std::fwrite(header, 1, sizeof header, file_) != sizeof header ||
          std::fwrite(record.data(), 1, record.size(), file_) != record.size() ||
          std::fwrite(footer, 1, sizeof footer, file_) != sizeof footer || std::fflush(file_) != 0) {
        dropped_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      ++records_in_file_;
      bytes_in_file_ += static_cast<int64_t>(sizeof header + record.size() + sizeof footer);
      if (records_in_file_ >= options_.max_records || bytes_in_file_ >= options_.max_bytes) {
        Status rotated = Rotate();
        if (!rotated.ok()) Log(LogLevel::kError, rotated.message());
      }
    }
    batch.clear();
  }
}

// Closes the current file, shifts path -> path.1 -> ... -> path.<backups>, and opens a new path.
Status RequestLog::Rotate() {
  if (file_) {
    std::fclose(file_);
    file_ = nullptr;
  }
  const std::string& path = options_.path;
  for (int i = options_.backups; i >= 1; --i) {
    const std::string from = i == 1 ? path : path + "." + std::to_string(i - 1);
    if (std::rename(from.c_str(), (path + "." + std::to_string(i)).c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus("rotate", from);
    }
  }
  file_ = std::fopen(path.c_str(), "wb");
  if (!file_) return ErrnoStatus("open", path);
  records_in_file_ = bytes_in_file_ = 0;
  return Status::Ok();
}

}  // namespace processor
