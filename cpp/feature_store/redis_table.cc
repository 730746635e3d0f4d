#include "feature_store/redis_table.h"

#include <algorithm>
#include <cstring>
#include <map>

namespace processor {

struct RedisTable::PartitionRead {
  std::string key;
  std::vector<int64_t> ids;       // distinct; their bytes are the hash fields
  std::vector<float> rows;        // [ids, dim] once read
  std::vector<bool> found;
  std::vector<std::string_view> Command() const {
    std::vector<std::string_view> argv{"HMGET", key};
    for (const int64_t& id : ids) argv.emplace_back(reinterpret_cast<const char*>(&id), sizeof(id));  // little-endian hosts
    argv.emplace_back(kMarkerField);  // one byte: never an id's eight
    return argv;
  }
  static constexpr char kMarkerField[] = "#";
};

namespace {

constexpr int kAttempts = 3;

std::string ReplyText(const redisReply& reply) { return std::string(reply.str ? reply.str : "", reply.str ? reply.len : 0); }

// Errors a cluster answers while it heals (a failover, a node loading its data): worth a retry later.
bool IsTransient(const std::string& error) {
  for (const char* prefix : {"CLUSTERDOWN", "TRYAGAIN", "LOADING", "MASTERDOWN", "TIMEOUT"}) {
    if (error.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

}  // namespace

Status RedisTable::Store(const redisReply& reply, PartitionRead& read) const {
  if (reply.type == REDIS_REPLY_ERROR && IsTransient(ReplyText(reply))) {
    return Status::Unavailable("Redis answered HMGET " + read.key + " with " + ReplyText(reply));
  }
  if (reply.type != REDIS_REPLY_ARRAY || reply.elements != read.ids.size() + 1) {
    return Status::Internal("Redis answered HMGET " + read.key + " with " +
                            (reply.type == REDIS_REPLY_ERROR ? ReplyText(reply) : "an unexpected reply"));
  }
  const redisReply* marker = reply.element[read.ids.size()];
  if (marker->type != REDIS_REPLY_STRING || std::string_view(marker->str, marker->len) != token_) {
    return Status::Unavailable(
        std::string(marker->type == REDIS_REPLY_STRING ? "was imported again" : "lost its rows (a server restarted empty?)") +
        " since this version loaded: " + read.key + "; it is being re-imported");
  }
  const size_t row_bytes = sizeof(float) * dim();
  read.rows.resize(read.ids.size() * dim());
  read.found.assign(read.ids.size(), false);
  for (size_t i = 0; i < read.ids.size(); ++i) {
    const redisReply* value = reply.element[i];
    if (value->type == REDIS_REPLY_NIL) continue;
    if (value->type != REDIS_REPLY_STRING || value->len != row_bytes) {
      return Status::Internal("row " + std::to_string(read.ids[i]) + " in " + read.key + " has " +
                              std::to_string(value->len) + " bytes, not " + std::to_string(row_bytes) +
                              " (a table of another shape?)");
    }
    std::memcpy(read.rows.data() + i * dim(), value->str, row_bytes);
    read.found[i] = true;
  }
  return Status::Ok();
}

// "ASK <slot> <host>:<port>": this once, ask that node, after ASKING.
Status RedisTable::FollowAsk(const std::string& redirect, PartitionRead& read) const {
  const size_t space = redirect.rfind(' ');
  std::vector<RedisNode> target;
  PROCESSOR_RETURN_IF_ERROR(ParseRedisUrl(redirect.substr(space + 1), &target));
  RedisRouter::Lease lease;
  PROCESSOR_RETURN_IF_ERROR(router_->Borrow(target[0], &lease));
  lease->Append({"ASKING"});
  lease->Append(read.Command());
  PROCESSOR_RETURN_IF_ERROR(lease->Flush());
  ReplyPtr asking, reply;
  PROCESSOR_RETURN_IF_ERROR(lease->Read(&asking));
  PROCESSOR_RETURN_IF_ERROR(lease->Read(&reply));
  return Store(*reply, read);
}

Status RedisTable::ReadOnce(std::vector<PartitionRead>& reads, bool* moved, Status* answer) const {
  std::map<RedisNode, std::vector<PartitionRead*>> by_node;
  for (PartitionRead& read : reads) by_node[router_->NodeFor(read.key)].push_back(&read);
  // Send to every server first, then read: the servers work in parallel.
  std::vector<std::pair<RedisRouter::Lease, std::vector<PartitionRead*>*>> sent;
  for (auto& [node, node_reads] : by_node) {
    RedisRouter::Lease lease;
    PROCESSOR_RETURN_IF_ERROR(router_->Borrow(node, &lease));
    for (const PartitionRead* read : node_reads) lease->Append(read->Command());
    PROCESSOR_RETURN_IF_ERROR(lease->Flush());
    sent.emplace_back(std::move(lease), &node_reads);
  }
  for (auto& [lease, node_reads] : sent) {
    for (PartitionRead* read : *node_reads) {
      ReplyPtr reply;
      PROCESSOR_RETURN_IF_ERROR(lease->Read(&reply));
      Status stored;
      const std::string error = reply->type == REDIS_REPLY_ERROR ? ReplyText(*reply) : "";
      if (error.rfind("MOVED ", 0) == 0) *moved = true;
      else if (error.rfind("ASK ", 0) == 0) stored = FollowAsk(error, *read);
      else stored = Store(*reply, *read);
      if (!stored.ok() && answer->ok()) *answer = stored;
    }
  }
  return Status::Ok();
}

Status RedisTable::Lookup(const int64_t* ids, size_t n, const float* default_row, float* rows,
                          size_t default_stride) const {
  std::vector<int64_t> distinct(ids, ids + n);
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  const size_t row_floats = static_cast<size_t>(dim());
  // The rows of the distinct ids, and which have one: the cache's first (its generation taken before
  // anything is read from Redis), then Redis's for the others.
  std::vector<float> rows_of(distinct.size() * row_floats);
  std::vector<char> have(distinct.size(), 0);
  std::vector<uint32_t> missing;
  const uint64_t generation = cache_ ? cache_->generation() : 0;
  if (cache_) {
    cache_->Find(distinct.data(), distinct.size(), rows_of.data(), &missing);
    for (size_t k = 0; k < distinct.size(); ++k) have[k] = 1;
    for (uint32_t k : missing) have[k] = 0;
  } else {
    missing.resize(distinct.size());
    for (size_t k = 0; k < distinct.size(); ++k) missing[k] = static_cast<uint32_t>(k);
  }
  std::sort(missing.begin(), missing.end());
  std::map<int, size_t> read_of_partition;
  std::vector<PartitionRead> reads;
  for (uint32_t k : missing) {
    const int partition = PartitionOf(distinct[k]);
    auto [it, added] = read_of_partition.emplace(partition, reads.size());
    if (added) reads.push_back(PartitionRead{PartitionKey(partition), {}, {}, {}});
    reads[it->second].ids.push_back(distinct[k]);
  }
  for (int attempt = 1; !reads.empty(); ++attempt) {
    bool moved = false;
    Status answer;
    const Status read = ReadOnce(reads, &moved, &answer);
    // An idle connection may have died with its server (restarted since): the broken ones are dropped,
    // and a second attempt opens new ones, after rereading a cluster's slot map (a replica may have
    // taken over the slots of a master out of reach).
    if (read.code() == StatusCode::kUnavailable && attempt == 1) {
      router_->DropIdleConnections();  // they died with the same server
      if (router_->cluster()) router_->RefreshSlotsAfterFailure();
      continue;
    }
    PROCESSOR_RETURN_IF_ERROR(read);
    PROCESSOR_RETURN_IF_ERROR(answer);
    if (!moved) break;
    if (attempt == kAttempts) return Status::Unavailable("the Redis Cluster kept answering MOVED (resharding?)");
    PROCESSOR_RETURN_IF_ERROR(router_->RefreshSlots());
  }
  // Each partition's ids are in the order of `distinct` (both sorted): walk them together.
  std::vector<uint32_t> read_from_redis;
  for (const PartitionRead& read : reads) {
    size_t k = 0;
    for (size_t j = 0; j < read.ids.size(); ++j) {
      k = std::lower_bound(distinct.begin() + k, distinct.end(), read.ids[j]) - distinct.begin();
      if (!read.found[j]) continue;
      std::memcpy(rows_of.data() + k * row_floats, read.rows.data() + j * row_floats, sizeof(float) * row_floats);
      have[k] = 1;
      read_from_redis.push_back(static_cast<uint32_t>(k));
    }
  }
  if (cache_) cache_->Admit(distinct.data(), read_from_redis.data(), read_from_redis.size(), rows_of.data(), generation);
  size_t absent = 0;
  for (size_t i = 0; i < n; ++i) {
    const size_t k = std::lower_bound(distinct.begin(), distinct.end(), ids[i]) - distinct.begin();
    const float* row = have[k] ? rows_of.data() + k * row_floats : MissingRow(ids[i], i, default_row, default_stride);
    absent += !have[k];
    std::memcpy(rows + i * row_floats, row, sizeof(float) * row_floats);
  }
  if (cache_) {
    cache_hits_.fetch_add(distinct.size() - missing.size(), std::memory_order_relaxed);
    redis_hits_.fetch_add(read_from_redis.size(), std::memory_order_relaxed);
    absent_.fetch_add(absent, std::memory_order_relaxed);
  }
  return Status::Ok();
}

void RedisTable::UseCache(uint64_t bytes) {
  cache_ = bytes ? std::make_unique<RowCache>(dim(), bytes) : nullptr;
  if (cache_ && cache_->capacity_rows() == 0) cache_ = nullptr;  // too small for a row per shard
}

void RedisTable::Forget(const int64_t* ids, size_t n) const {
  if (cache_) cache_->Forget(ids, n);
}

void RedisTable::ForgetAll() const {
  if (cache_) cache_->Clear();
}

TierCounters RedisTable::counters() const {
  TierCounters c;
  c.store = "redis";
  c.dram_hits = cache_hits_.load(std::memory_order_relaxed);
  c.disk_hits = redis_hits_.load(std::memory_order_relaxed);
  c.absent = absent_.load(std::memory_order_relaxed);
  if (cache_) {
    c.evictions = cache_->evictions();
    c.rejections = cache_->rejections();
    c.dram_bytes = cache_->bytes();
    c.dram_rows = cache_->held_rows();
  }
  return c;
}

}  // namespace processor
