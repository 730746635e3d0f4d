// RowCache: the DRAM tier of a table: the hot rows, within a byte budget (ev_storage_size's first
// entry, DeepRec's meaning), in front of its disk tier.
//
// Policy: TinyLFU admission over CLOCK eviction (Einziger, Friedman & Manes, "TinyLFU: A Highly
// Efficient Cache Admission Policy", 2017). Recommendation ids are skewed (Zipf-like) with a long tail
// of ids seen once: LRU admits every tail id and lets it push a hot row out; TinyLFU admits a row
// read from disk only when a count-min sketch of recent misses (counters up to 15, halved every
// 10 x capacity misses so that popularity can shift) says it is more frequent than the row CLOCK
// would evict, and never a row seen once. CLOCK (a reference bit per row, set by a hit) keeps hot rows
// without moving anything on a hit, so a hit only reads. The cache is 16 shards by id hash; a batch
// locks each shard it touches once.
//
// Memory: rows live in one slab per shard, each beside its id (8 bytes); per row also its reference
// byte, two index words (16 bytes) and 8 sketch counters: about 33 bytes beyond its floats.
// Everything is allocated when the cache is made: the budget is the cache's whole size from the first
// request on.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace processor {

class RowCache {
 public:
  RowCache(int64_t dim, uint64_t budget_bytes);
  ~RowCache();
  RowCache(const RowCache&) = delete;
  RowCache& operator=(const RowCache&) = delete;

  // Copies the rows of the ids it holds into rows[i * dim]; appends the positions of the others to
  // *missing. Counts an access of every id.
  void Find(const int64_t* ids, size_t n, float* rows, std::vector<uint32_t>* missing);
  // Offers rows just read from the store behind: rows[which[k] * dim] is the row of ids[which[k]].
  // `generation`: generation() taken before they were read; if an invalidation came since, the rows
  // may predate it and none is admitted.
  void Admit(const int64_t* ids, const uint32_t* which, size_t count, const float* rows, uint64_t generation);
  // A delta whose lookups are kept out meanwhile (local tables): rows the cache holds take their new values.
  void Update(const int64_t* ids, size_t n, const float* rows);
  // A delta written behind the cache's back while lookups run (Redis): the cache forgets these ids
  // (Forget), or everything (Clear), and rows read before are not admitted afterwards.
  void Forget(const int64_t* ids, size_t n);
  void Clear();
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

  uint64_t capacity_rows() const { return capacity_; }
  uint64_t bytes() const { return bytes_; }  // allocated: the budget, rounded down to whole rows
  uint64_t held_rows() const;
  uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }
  uint64_t rejections() const { return rejections_.load(std::memory_order_relaxed); }

 private:
  struct Shard;
  Shard& ShardOf(uint64_t hash) { return *shards_[hash >> (64 - kShardBits)]; }
  template <typename Visit>
  void ForEachShard(const int64_t* ids, const uint32_t* which, size_t n, Visit visit);
  // Admits `row` of `id` if TinyLFU prefers it to CLOCK's victim; the shard is locked.
  void Offer(Shard* shard, int64_t id, uint64_t hash, const float* row, uint64_t* evicted, uint64_t* rejected);

  static constexpr int kShardBits = 4;
  int64_t dim_;
  uint64_t capacity_ = 0;
  uint64_t bytes_ = 0;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<uint64_t> evictions_{0};
  std::atomic<uint64_t> rejections_{0};
};

}  // namespace processor
