#include "serving/request_metrics.h"

namespace processor {
namespace {

// Each thread takes the next stripe the first time it records.
int ThreadStripe(int stripes) {
  static std::atomic<int> next{0};
  thread_local const int stripe = next.fetch_add(1, std::memory_order_relaxed);
  return stripe % stripes;
}

}  // namespace

int RequestMetrics::StatusIndex(int code) {
  switch (code) {
    case 200: return 0;
    case 400: return 1;
    case 503: return 3;
    case 404: return 4;
    default: return 2;
  }
}

const char* RequestMetrics::StatusName(int index) {
  static const char* const kNames[kStatuses] = {"OK", "INVALID_ARGUMENT", "INTERNAL", "UNAVAILABLE", "NOT_FOUND"};
  return kNames[index];
}

void RequestMetrics::Record(int code, int64_t latency_us) {
  Stripe& stripe = stripes_[ThreadStripe(kStripes)];
  stripe.count_by_status[StatusIndex(code)].fetch_add(1, std::memory_order_relaxed);
  int bucket = 0;
  while (bucket < kBuckets && latency_us > BucketBound(bucket)) ++bucket;
  stripe.buckets[bucket].fetch_add(1, std::memory_order_relaxed);
  stripe.latency_sum_us.fetch_add(static_cast<uint64_t>(latency_us), std::memory_order_relaxed);
}

RequestMetrics::Snapshot RequestMetrics::Read() const {
  Snapshot total;
  for (const Stripe& stripe : stripes_) {
    for (int i = 0; i < kStatuses; ++i) total.count_by_status[i] += stripe.count_by_status[i].load(std::memory_order_relaxed);
    for (int i = 0; i <= kBuckets; ++i) total.buckets[i] += stripe.buckets[i].load(std::memory_order_relaxed);
    total.latency_sum_us += stripe.latency_sum_us.load(std::memory_order_relaxed);
  }
  return total;
}

}  // namespace processor
