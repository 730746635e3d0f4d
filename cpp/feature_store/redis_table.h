// RedisTable: an embedding table in Redis or a Redis Cluster, in the layout the importer writes
// (src/processor/feature_store/redis_tables.py): row `id` is field <id as 8 little-endian bytes> of the
// hash `<key_prefix><id mod partitions>}`, its value dim little-endian float32s.
//
// A lookup reads each distinct id once: one HMGET per partition, pipelined per server and sent to all
// servers before any reply is read. MOVED refreshes the slot map and retries; ASK is followed.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "feature_store/embedding_table.h"
#include "feature_store/redis_router.h"

namespace processor {

class RedisTable : public EmbeddingTable {
 public:
  // key_prefix: "pe:{<model>/<version>/<table>/"
  RedisTable(std::string name, int64_t dim, std::string key_prefix, int partitions, std::shared_ptr<RedisRouter> router)
      : EmbeddingTable(std::move(name), dim), key_prefix_(std::move(key_prefix)), partitions_(partitions),
        router_(std::move(router)) {}

  Status Lookup(const int64_t* ids, size_t n, const float* default_row, float* rows) const override;

 private:
  struct PartitionRead;
  std::string PartitionKey(int partition) const { return key_prefix_ + std::to_string(partition) + "}"; }
  // numpy's mod, as the importer computes it: negative ids land in [0, partitions) too.
  int PartitionOf(int64_t id) const { return static_cast<int>(((id % partitions_) + partitions_) % partitions_); }
  // One attempt at reading `reads`; *moved says a server answered MOVED (the slot map is stale).
  Status ReadOnce(std::vector<PartitionRead>& reads, bool* moved) const;
  Status Store(const redisReply& reply, PartitionRead& read) const;
  Status FollowAsk(const std::string& redirect, PartitionRead& read) const;

  std::string key_prefix_;
  int partitions_;
  std::shared_ptr<RedisRouter> router_;
};

}  // namespace processor
