// Request counters and a latency histogram, cheap enough for every request: relaxed atomic adds on
// cache-line-separated stripes, one stripe per thread (threads rarely share one), summed on read.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

namespace processor {

class RequestMetrics {
 public:
  // Upper bounds of the latency buckets in microseconds: 10 us doubling to ~5 s, then +Inf.
  static constexpr int kBuckets = 20;
  static constexpr int kStatuses = 5;  // 200, 400, 500, 503, 404

  struct Snapshot {
    std::array<uint64_t, kStatuses> count_by_status{};
    std::array<uint64_t, kBuckets + 1> buckets{};  // non-cumulative; last: above every bound
    uint64_t latency_sum_us = 0;
  };

  static int64_t BucketBound(int bucket) { return int64_t{10} << bucket; }
  static int StatusIndex(int code);
  static const char* StatusName(int index);  // TF Serving's status labels

  void Record(int code, int64_t latency_us);
  Snapshot Read() const;

 private:
  struct alignas(64) Stripe {
    std::array<std::atomic<uint64_t>, kStatuses> count_by_status{};
    std::array<std::atomic<uint64_t>, kBuckets + 1> buckets{};
    std::atomic<uint64_t> latency_sum_us{0};
  };
  static constexpr int kStripes = 16;
  std::array<Stripe, kStripes> stripes_;
};

}  // namespace processor
