#include "feature_store/row_cache.h"

#include <algorithm>
#include <cstring>

namespace processor {
namespace {

inline uint64_t Mix(int64_t id) {  // splitmix64's finalizer
  uint64_t x = static_cast<uint64_t>(id);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t PowerOfTwoAtLeast(uint64_t n) {
  uint64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

constexpr uint8_t kMaxCount = 15;  // 4-bit counters, as TinyLFU's
constexpr uint64_t kNoSlot = 0;    // index entries are slot + 1

}  // namespace

struct RowCache::Shard {
  Shard(uint64_t capacity, int64_t dim)
      : capacity(capacity),
        ids(capacity),
        referenced(capacity),
        rows(capacity * dim),
        index(PowerOfTwoAtLeast(2 * capacity)),
        sketch(PowerOfTwoAtLeast(8 * capacity)),
        reset_at(10 * capacity) {}

  static uint64_t Bytes(uint64_t capacity, int64_t dim) {
    return capacity * (sizeof(float) * dim + sizeof(int64_t) + 1) + PowerOfTwoAtLeast(2 * capacity) * sizeof(uint32_t) +
           PowerOfTwoAtLeast(8 * capacity);
  }

  // The index position holding `id`, or the empty one where it would go.
  size_t Probe(int64_t id, uint64_t hash) const {
    const size_t mask = index.size() - 1;
    size_t p = hash & mask;
    while (index[p] != kNoSlot && ids[index[p] - 1] != id) p = (p + 1) & mask;
    return p;
  }

  // Linear probing's deletion: entries after the hole move back when their home allows it.
  void Erase(size_t hole) {
    const size_t mask = index.size() - 1;
    for (size_t j = hole;;) {
      j = (j + 1) & mask;
      if (index[j] == kNoSlot) break;
      const size_t home = Mix(ids[index[j] - 1]) & mask;
      const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
      if (stays) continue;
      index[hole] = index[j];
      hole = j;
    }
    index[hole] = kNoSlot;
  }

  // The count-min sketch: four counters per id in one array (double hashing on a second mix).
  template <typename Each>
  void Counters(uint64_t hash, Each each) {
    const uint64_t mask = sketch.size() - 1;
    const uint64_t h2 = (hash >> 32) | 1;
    for (uint64_t k = 0; k < 4; ++k) each(sketch[(hash + k * h2) & mask]);
  }
  uint8_t Estimate(uint64_t hash) {
    uint8_t least = kMaxCount;
    Counters(hash, [&](uint8_t& c) { least = std::min(least, c); });
    return least;
  }
  void Count(uint64_t hash) {
    const uint8_t least = Estimate(hash);
    if (least < kMaxCount) Counters(hash, [&](uint8_t& c) { c += c == least; });  // conservative update
    if (++accesses >= reset_at) {  // aging: recent popularity counts most
      for (uint8_t& c : sketch) c >>= 1;
      accesses /= 2;
    }
  }

  std::mutex mu;
  const uint64_t capacity;
  uint64_t used = 0;
  uint64_t hand = 0;
  std::vector<int64_t> ids;          // by slot
  std::vector<uint8_t> referenced;   // by slot: hit since CLOCK last passed
  std::vector<float> rows;           // [capacity, dim]
  std::vector<uint32_t> index;       // open addressing: slot + 1
  std::vector<uint8_t> sketch;
  uint64_t accesses = 0;
  const uint64_t reset_at;
};

RowCache::RowCache(int64_t dim, uint64_t budget_bytes) : dim_(dim) {
  const uint64_t shards = uint64_t{1} << kShardBits;
  const uint64_t per_shard = budget_bytes / shards;
  // The largest capacity whose allocations fit the shard's share of the budget.
  uint64_t low = 0, high = per_shard / (sizeof(float) * dim) + 1;
  while (low + 1 < high) {
    const uint64_t mid = (low + high) / 2;
    (Shard::Bytes(mid, dim) <= per_shard ? low : high) = mid;
  }
  capacity_ = low * shards;
  bytes_ = low ? Shard::Bytes(low, dim) * shards : 0;
  for (uint64_t s = 0; s < shards; ++s) shards_.push_back(std::make_unique<Shard>(low, dim));
}

RowCache::~RowCache() = default;

uint64_t RowCache::held_rows() const {
  uint64_t held = 0;
  for (const auto& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard->mu);
    held += shard->used;
  }
  return held;
}

// Calls visit(shard, positions of ids in it) once per shard that ids[which[...]] touch (which:
// nullptr for 0..n-1), with the shard locked.
template <typename Visit>
void RowCache::ForEachShard(const int64_t* ids, const uint32_t* which, size_t n, Visit visit) {
  constexpr size_t kShards = size_t{1} << kShardBits;
  thread_local std::vector<uint32_t> order;
  thread_local std::vector<uint64_t> hashes;
  size_t starts[kShards + 1] = {};
  order.resize(n);
  hashes.resize(n);
  for (size_t k = 0; k < n; ++k) {
    const uint32_t i = which ? which[k] : static_cast<uint32_t>(k);
    hashes[k] = Mix(ids[i]);
    ++starts[(hashes[k] >> (64 - kShardBits)) + 1];
  }
  for (size_t s = 0; s < kShards; ++s) starts[s + 1] += starts[s];
  size_t next[kShards];
  std::copy(starts, starts + kShards, next);
  for (size_t k = 0; k < n; ++k) order[next[hashes[k] >> (64 - kShardBits)]++] = static_cast<uint32_t>(k);
  for (size_t s = 0; s < kShards; ++s) {
    if (starts[s] == starts[s + 1]) continue;
    Shard& shard = *shards_[s];
    std::lock_guard<std::mutex> lock(shard.mu);
    for (size_t o = starts[s]; o < starts[s + 1]; ++o) {
      const uint32_t k = order[o];
      visit(shard, which ? which[k] : k, hashes[k]);
    }
  }
}

void RowCache::Find(const int64_t* ids, size_t n, float* rows, std::vector<uint32_t>* missing) {
  if (capacity_ == 0) {
    for (size_t i = 0; i < n; ++i) missing->push_back(static_cast<uint32_t>(i));
    return;
  }
  const size_t row_bytes = sizeof(float) * dim_;
  ForEachShard(ids, nullptr, n, [&](Shard& shard, uint32_t i, uint64_t hash) {
    shard.Count(hash);
    const uint32_t slot = shard.index[shard.Probe(ids[i], hash)];
    if (slot == kNoSlot) {
      missing->push_back(i);
      return;
    }
    shard.referenced[slot - 1] = 1;
    std::memcpy(rows + i * dim_, shard.rows.data() + (slot - 1) * dim_, row_bytes);
  });
}

void RowCache::Admit(const int64_t* ids, const uint32_t* which, size_t count, const float* rows) {
  if (capacity_ == 0 || count == 0) return;
  const size_t row_bytes = sizeof(float) * dim_;
  uint64_t evicted = 0, rejected = 0;
  ForEachShard(ids, which, count, [&](Shard& shard, uint32_t i, uint64_t hash) {
    const int64_t id = ids[i];
    if (shard.index[shard.Probe(id, hash)] != kNoSlot) return;  // a duplicate in the batch, or another request's
    uint64_t slot;
    if (shard.used < shard.capacity) {
      slot = shard.used++;
    } else {
      while (shard.referenced[shard.hand]) {  // CLOCK: a referenced row gets a second chance
        shard.referenced[shard.hand] = 0;
        shard.hand = (shard.hand + 1) % shard.capacity;
      }
      const int64_t victim = shard.ids[shard.hand];
      const uint64_t victim_hash = Mix(victim);
      if (shard.Estimate(hash) <= shard.Estimate(victim_hash)) {  // TinyLFU: only a more frequent row gets in
        ++rejected;
        return;
      }
      shard.Erase(shard.Probe(victim, victim_hash));
      slot = shard.hand;
      shard.hand = (shard.hand + 1) % shard.capacity;
      ++evicted;
    }
    shard.ids[slot] = id;
    shard.referenced[slot] = 0;
    std::memcpy(shard.rows.data() + slot * dim_, rows + i * dim_, row_bytes);
    shard.index[shard.Probe(id, hash)] = static_cast<uint32_t>(slot + 1);
  });
  if (evicted) evictions_.fetch_add(evicted, std::memory_order_relaxed);
  if (rejected) rejections_.fetch_add(rejected, std::memory_order_relaxed);
}

void RowCache::Update(const int64_t* ids, size_t n, const float* rows) {
  if (capacity_ == 0) return;
  const size_t row_bytes = sizeof(float) * dim_;
  ForEachShard(ids, nullptr, n, [&](Shard& shard, uint32_t i, uint64_t hash) {
    const uint32_t slot = shard.index[shard.Probe(ids[i], hash)];
    if (slot != kNoSlot) std::memcpy(shard.rows.data() + (slot - 1) * dim_, rows + i * dim_, row_bytes);
  });
}

}  // namespace processor
