// RedisTable: an embedding table in Redis or a Redis Cluster, in the layout the importer writes
// (src/processor/feature_store/redis_tables.py, which gives each table its key prefix and says how the
// two sides are tied by tests): row `id` is field <id as 8 little-endian bytes> of the hash
// `<key_prefix><id mod partitions>}`, its value dim little-endian float32s.
//
// A lookup reads each distinct id once: one HMGET per partition, pipelined per server and sent to all
// servers before any reply is read. MOVED refreshes the slot map and retries; ASK is followed; a server
// out of reach refreshes it too (a cluster may have failed over) and retries once more.
//
// Lost rows are never served as missing ids: every partition holds the field "#" whose value is the
// import's token (written before its rows), read with the rows. A partition without it, or with
// another import's token, lost its rows (a server restarted empty) or was re-imported since this
// version loaded (perhaps without this version's deltas): the lookup is Unavailable, naming the table,
// and the control plane re-imports and reloads (feature_store/store.py).
//
// With a hot-row cache (feature_store_cache_bytes), the rows it holds are served from this process and
// only the others are read (RowCache: TinyLFU over CLOCK, as the DRAM tier of local tables). The cache
// is this version's table's own, so a switch never reads another version's rows. Deltas are written to
// Redis behind it: the control plane makes it forget the ids a delta changes when it applies the delta
// (this replica's or, as it polls, another's), and all it holds when the version's delta record
// changed (checked once a second), and a row read before such a moment is never admitted after it.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "feature_store/embedding_table.h"
#include "feature_store/redis_router.h"
#include "feature_store/tiered_table.h"

namespace processor {

class RedisTable : public EmbeddingTable {
 public:
  // key_prefix: the importer's (control.TableSources); token: the import's, in each partition's field "#".
  RedisTable(std::string name, int64_t dim, std::string key_prefix, int partitions, std::string token,
             std::shared_ptr<RedisRouter> router)
      : EmbeddingTable(std::move(name), dim), key_prefix_(std::move(key_prefix)), partitions_(partitions),
        token_(std::move(token)), router_(std::move(router)) {}

  Status Lookup(const int64_t* ids, size_t n, const float* default_row, float* rows,
                size_t default_stride = 0) const override;

  // A hot-row cache of `bytes` (0: none); before the table serves.
  void UseCache(uint64_t bytes);
  bool cached() const { return cache_ != nullptr; }
  void Forget(const int64_t* ids, size_t n) const;  // a delta changed these rows in Redis
  void ForgetAll() const;                           // a delta changed rows this process does not know
  TierCounters counters() const;

 private:
  struct PartitionRead;
  std::string PartitionKey(int partition) const { return key_prefix_ + std::to_string(partition) + "}"; }
  // numpy's mod, as the importer computes it: negative ids land in [0, partitions) too.
  int PartitionOf(int64_t id) const { return static_cast<int>(((id % partitions_) + partitions_) % partitions_); }
  // One attempt at reading `reads`: fails when a server is out of reach; *answer is the first error a
  // server answered (a lost partition, CLUSTERDOWN, ...), *moved whether one answered MOVED (the slot
  // map is stale).
  Status ReadOnce(std::vector<PartitionRead>& reads, bool* moved, Status* answer) const;
  Status Store(const redisReply& reply, PartitionRead& read) const;
  Status FollowAsk(const std::string& redirect, PartitionRead& read) const;

  std::string key_prefix_;
  int partitions_;
  std::string token_;
  std::shared_ptr<RedisRouter> router_;
  std::unique_ptr<RowCache> cache_;
  mutable std::atomic<uint64_t> cache_hits_{0}, redis_hits_{0}, absent_{0};
};

}  // namespace processor
