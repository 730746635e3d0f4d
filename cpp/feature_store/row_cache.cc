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

// A shard: rows in a slab of entries [id, row] (the id beside its row, so a hit touches the row's own
// cache lines), found through an open-addressing index of (hash >> 32, slot + 1) words: a probe and
// linear probing's deletion read the index alone. CLOCK's reference bits are a byte array of their
// own, small enough to stay in cache while the hand sweeps it.
struct RowCache::Shard {
  static constexpr uint64_t kHeaderWords = 1;  // the id

  Shard(uint64_t capacity, int64_t dim)
      : capacity(capacity),
        entry_words(kHeaderWords + (static_cast<uint64_t>(dim) + 1) / 2),
        slab(capacity * entry_words),
        referenced(capacity),
        index(PowerOfTwoAtLeast(2 * capacity)),
        sketch(SketchBytes(capacity)),
        reset_at(10 * capacity) {}

  static uint64_t SketchBytes(uint64_t capacity) { return std::max<uint64_t>(64, PowerOfTwoAtLeast(8 * capacity)); }
  static uint64_t Bytes(uint64_t capacity, int64_t dim) {
    return capacity * (sizeof(uint64_t) * (kHeaderWords + (static_cast<uint64_t>(dim) + 1) / 2) + 1) +
           PowerOfTwoAtLeast(2 * capacity) * sizeof(uint64_t) + SketchBytes(capacity);
  }

  int64_t IdAt(uint64_t slot) const { return static_cast<int64_t>(slab[slot * entry_words]); }
  float* RowAt(uint64_t slot) { return reinterpret_cast<float*>(&slab[slot * entry_words + kHeaderWords]); }

  // The index position holding `id`, or the empty one where it would go.
  size_t Probe(int64_t id, uint64_t hash) const {
    const size_t mask = index.size() - 1;
    const uint64_t tag = hash >> 32;
    for (size_t p = tag & mask;; p = (p + 1) & mask) {
      const uint64_t entry = index[p];
      if (entry == kNoSlot || ((entry >> 32) == tag && IdAt((entry & 0xffffffffu) - 1) == id)) return p;
    }
  }
  // The first index position whose entry has this hash's tag, or the empty one: no row is read.
  size_t ProbeTag(uint64_t hash) const {
    const size_t mask = index.size() - 1;
    const uint64_t tag = hash >> 32;
    size_t p = tag & mask;
    while (index[p] != kNoSlot && (index[p] >> 32) != tag) p = (p + 1) & mask;
    return p;
  }
  static uint64_t Entry(uint64_t hash, uint64_t slot) { return (hash >> 32 << 32) | (slot + 1); }

  // Linear probing's deletion: entries after the hole move back when their home allows it.
  void Erase(size_t hole) {
    const size_t mask = index.size() - 1;
    for (size_t j = hole;;) {
      j = (j + 1) & mask;
      if (index[j] == kNoSlot) break;
      const size_t home = (index[j] >> 32) & mask;
      const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
      if (stays) continue;
      index[hole] = index[j];
      hole = j;
    }
    index[hole] = kNoSlot;
  }

  // The count-min sketch: four 8-bit counters per id, all in one 64-byte block (one cache line).
  size_t BlockOffset(uint64_t hash) const {  // a second mix: blocks independent of index positions
    return (((hash * 0x9E3779B97F4A7C15ull) >> 20) & (sketch.size() / 64 - 1)) * 64;
  }
  uint8_t* Block(uint64_t hash) { return &sketch[BlockOffset(hash)]; }
  template <typename Each>
  static void Counters(uint8_t* block, uint64_t hash, Each each) {
    for (int k = 0; k < 4; ++k) each(block[(hash >> (40 + 6 * k)) & 63]);
  }
  uint8_t Estimate(uint64_t hash) {
    uint8_t least = kMaxCount;
    Counters(Block(hash), hash, [&](uint8_t& c) { least = std::min(least, c); });
    return least;
  }
  void Count(uint64_t hash) {
    uint8_t* block = Block(hash);
    uint8_t least = kMaxCount;
    Counters(block, hash, [&](uint8_t& c) { least = std::min(least, c); });
    if (least < kMaxCount) Counters(block, hash, [&](uint8_t& c) { c += c == least; });  // conservative update
    if (++accesses >= reset_at) {  // aging: recent popularity counts most
      for (uint8_t& c : sketch) c >>= 1;
      accesses /= 2;
    }
  }
  void PrefetchIndex(uint64_t hash) const { __builtin_prefetch(&index[(hash >> 32) & (index.size() - 1)]); }
  void PrefetchSketch(uint64_t hash) const { __builtin_prefetch(&sketch[BlockOffset(hash)]); }

  std::mutex mu;
  const uint64_t capacity;
  const uint64_t entry_words;
  uint64_t used = 0;
  uint64_t hand = 0;
  std::vector<uint64_t> slab;    // [capacity, entry_words]
  std::vector<uint8_t> referenced;  // by slot: hit since CLOCK last passed
  std::vector<uint64_t> index;   // (hash >> 32) << 32 | (slot + 1); 0: empty
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

// Groups the ids (ids[which[k]], or ids[k] without `which`) by shard and calls
// visit(shard, positions, hashes, count) once per shard they touch, with that shard locked.
template <typename Visit>
void RowCache::ForEachShard(const int64_t* ids, const uint32_t* which, size_t n, Visit visit) {
  constexpr size_t kShards = size_t{1} << kShardBits;
  thread_local std::vector<uint64_t> hashes, grouped_hashes;
  thread_local std::vector<uint32_t> grouped;
  size_t starts[kShards + 1] = {};
  hashes.resize(n);
  grouped.resize(n);
  grouped_hashes.resize(n);
  for (size_t k = 0; k < n; ++k) {
    hashes[k] = Mix(ids[which ? which[k] : k]);
    ++starts[(hashes[k] >> (64 - kShardBits)) + 1];
  }
  for (size_t s = 0; s < kShards; ++s) starts[s + 1] += starts[s];
  size_t next[kShards];
  std::copy(starts, starts + kShards, next);
  for (size_t k = 0; k < n; ++k) {
    const size_t o = next[hashes[k] >> (64 - kShardBits)]++;
    grouped[o] = which ? which[k] : static_cast<uint32_t>(k);
    grouped_hashes[o] = hashes[k];
  }
  for (size_t s = 0; s < kShards; ++s) {
    if (starts[s] == starts[s + 1]) continue;
    Shard& shard = *shards_[s];
    std::lock_guard<std::mutex> lock(shard.mu);
    visit(shard, grouped.data() + starts[s], grouped_hashes.data() + starts[s], starts[s + 1] - starts[s]);
  }
}

void RowCache::Find(const int64_t* ids, size_t n, float* rows, std::vector<uint32_t>* missing) {
  if (capacity_ == 0) {
    for (size_t i = 0; i < n; ++i) missing->push_back(static_cast<uint32_t>(i));
    return;
  }
  const size_t row_bytes = sizeof(float) * dim_;
  thread_local std::vector<size_t> at;
  ForEachShard(ids, nullptr, n, [&](Shard& shard, const uint32_t* positions, const uint64_t* hashes, size_t m) {
    // Two passes, so that the memory reads of a shard's ids overlap instead of waiting one by one.
    // Buys: a DRAM tier hit at about the cost of a local table's row (benchmarks/tiers.py, Zipf ids).
    at.resize(m);
    constexpr size_t kAhead = 8;
    for (size_t j = 0; j < std::min(m, kAhead); ++j) shard.PrefetchIndex(hashes[j]);
    for (size_t j = 0; j < m; ++j) {  // 1: the index entry whose tag matches (no row read yet)
      if (j + kAhead < m) shard.PrefetchIndex(hashes[j + kAhead]);
      at[j] = shard.ProbeTag(hashes[j]);
      const uint64_t entry = shard.index[at[j]];
      if (entry != kNoSlot) __builtin_prefetch(&shard.slab[((entry & 0xffffffffu) - 1) * shard.entry_words]);
    }
    for (size_t j = 0; j < m; ++j) {  // 2: the ids checked, the rows copied
      const uint32_t i = positions[j];
      uint64_t entry = shard.index[at[j]];
      if (entry != kNoSlot && shard.IdAt((entry & 0xffffffffu) - 1) != ids[i]) {
        entry = shard.index[shard.Probe(ids[i], hashes[j])];  // another id with the same tag: probe on
      }
      if (entry == kNoSlot) {
        missing->push_back(i);
        continue;
      }
      const uint64_t slot = (entry & 0xffffffffu) - 1;
      shard.referenced[slot] = 1;
      std::memcpy(rows + i * dim_, shard.RowAt(slot), row_bytes);
    }
  });
}

void RowCache::Admit(const int64_t* ids, const uint32_t* which, size_t count, const float* rows,
                     uint64_t generation) {
  if (capacity_ == 0 || count == 0) return;
  uint64_t evicted = 0, rejected = 0;
  ForEachShard(ids, which, count, [&](Shard& shard, const uint32_t* positions, const uint64_t* hashes, size_t m) {
    // Checked under the shard's lock, which Forget and Clear take after they move the generation on:
    // a row read before an invalidation is either refused here or forgotten by it.
    if (generation_.load(std::memory_order_acquire) != generation) return;
    for (size_t j = 0; j < m; ++j) shard.PrefetchSketch(hashes[j]);
    for (size_t j = 0; j < m; ++j) Offer(&shard, ids[positions[j]], hashes[j], rows + positions[j] * dim_, &evicted,
                                        &rejected);
  });
  if (evicted) evictions_.fetch_add(evicted, std::memory_order_relaxed);
  if (rejected) rejections_.fetch_add(rejected, std::memory_order_relaxed);
}

void RowCache::Offer(Shard* shard_ptr, int64_t id, uint64_t hash, const float* row, uint64_t* evicted,
                     uint64_t* rejected) {
  Shard& shard = *shard_ptr;
  // Only misses are counted: a hit's recency is CLOCK's reference bit, and TinyLFU needs the frequency
  // of rows asking to come in (and of victims, counted when they came in and aged since).
  shard.Count(hash);
  const bool full = shard.used == shard.capacity;
  const uint8_t frequency = full ? shard.Estimate(hash) : 0;
  // A row seen once (the long tail: most misses) is not worth a victim: refused before any other work.
  // Buys: admission costs one sketch line for most misses (benchmarks/tiers.py, uniform ids).
  if (full && frequency <= 1) {
    ++*rejected;
    return;
  }
  if (shard.index[shard.Probe(id, hash)] != kNoSlot) return;  // a duplicate in the batch, or another request's
  uint64_t slot;
  if (!full) {
    slot = shard.used++;
  } else {
    while (shard.referenced[shard.hand]) {  // CLOCK: a referenced row gets a second chance
      shard.referenced[shard.hand] = 0;
      shard.hand = (shard.hand + 1) % shard.capacity;
    }
    const int64_t victim = shard.IdAt(shard.hand);
    const uint64_t victim_hash = Mix(victim);
    if (frequency <= shard.Estimate(victim_hash)) {  // TinyLFU: only a more frequent row gets in
      ++*rejected;
      return;
    }
    shard.Erase(shard.Probe(victim, victim_hash));
    slot = shard.hand;
    shard.hand = (shard.hand + 1) % shard.capacity;
    ++*evicted;
  }
  shard.slab[slot * shard.entry_words] = static_cast<uint64_t>(id);
  shard.referenced[slot] = 0;
  std::memcpy(shard.RowAt(slot), row, sizeof(float) * dim_);
  shard.index[shard.Probe(id, hash)] = Shard::Entry(hash, slot);
}

void RowCache::Forget(const int64_t* ids, size_t n) {
  if (capacity_ == 0) return;
  generation_.fetch_add(1, std::memory_order_acq_rel);
  ForEachShard(ids, nullptr, n, [&](Shard& shard, const uint32_t* positions, const uint64_t* hashes, size_t m) {
    for (size_t j = 0; j < m; ++j) {
      const size_t p = shard.Probe(ids[positions[j]], hashes[j]);
      if (shard.index[p] == kNoSlot) continue;
      const uint64_t slot = (shard.index[p] & 0xffffffffu) - 1;
      shard.Erase(p);
      // The slot is free again: the last used slot moves into it, so that slots [0, used) stay in use.
      const uint64_t last = --shard.used;
      if (slot != last) {
        const int64_t moved = shard.IdAt(last);
        const uint64_t moved_hash = Mix(moved);
        std::memcpy(&shard.slab[slot * shard.entry_words], &shard.slab[last * shard.entry_words],
                    sizeof(uint64_t) * shard.entry_words);
        shard.referenced[slot] = shard.referenced[last];
        shard.index[shard.Probe(moved, moved_hash)] = Shard::Entry(moved_hash, slot);
      }
      shard.referenced[last] = 0;
      if (shard.hand >= shard.used) shard.hand = 0;
    }
  });
}

void RowCache::Clear() {
  if (capacity_ == 0) return;
  generation_.fetch_add(1, std::memory_order_acq_rel);
  for (auto& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard->mu);
    std::fill(shard->index.begin(), shard->index.end(), kNoSlot);
    std::fill(shard->referenced.begin(), shard->referenced.end(), 0);
    shard->used = 0;
    shard->hand = 0;
  }
}

void RowCache::Update(const int64_t* ids, size_t n, const float* rows) {
  if (capacity_ == 0) return;
  const size_t row_bytes = sizeof(float) * dim_;
  ForEachShard(ids, nullptr, n, [&](Shard& shard, const uint32_t* positions, const uint64_t* hashes, size_t m) {
    for (size_t j = 0; j < m; ++j) {
      const uint32_t i = positions[j];
      const uint64_t entry = shard.index[shard.Probe(ids[i], hashes[j])];
      if (entry != kNoSlot) std::memcpy(shard.RowAt((entry & 0xffffffffu) - 1), rows + i * dim_, row_bytes);
    }
  });
}

}  // namespace processor
