#include "feature_store/redis_router.h"

#include <chrono>
#include <cstring>

namespace processor {

namespace {

// CRC16-CCITT (XMODEM), as Redis Cluster defines key slots.
uint16_t Crc16(const char* data, size_t size) {
  uint16_t crc = 0;
  for (size_t i = 0; i < size; ++i) {
    crc ^= static_cast<uint16_t>(static_cast<uint8_t>(data[i])) << 8;
    for (int bit = 0; bit < 8; ++bit) crc = crc & 0x8000 ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : static_cast<uint16_t>(crc << 1);
  }
  return crc;
}

constexpr auto kBorrowTimeout = std::chrono::seconds(5);

}  // namespace

int RedisRouter::Slot(std::string_view key) {
  const size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) key = key.substr(open + 1, close - open - 1);
  }
  return Crc16(key.data(), key.size()) % kSlots;
}

Status RedisRouter::Connect(const RedisSettings& settings, std::shared_ptr<RedisRouter>* router) {
  std::shared_ptr<RedisRouter> made(new RedisRouter(settings));
  Status last;
  for (const RedisNode& seed : settings.seeds) {
    Lease lease;
    last = made->Borrow(seed, &lease);
    if (!last.ok()) {
      if (last.code() == StatusCode::kUnavailable) continue;  // try the next seed
      return last;
    }
    ReplyPtr info;
    last = lease->Command({"INFO", "cluster"}, &info);
    if (!last.ok()) continue;
    const bool cluster = info->type == REDIS_REPLY_STRING && std::string(info->str, info->len).find("cluster_enabled:1") != std::string::npos;
    if (!cluster) {
      if (settings.seeds.size() > 1) {
        return Status::InvalidArgument("redis_url lists several servers, but " + seed.Address() + " is not in cluster mode");
      }
      std::lock_guard<std::mutex> lock(made->mu_);
      made->nodes_ = {seed};
      made->slot_owner_.fill(0);
      *router = std::move(made);
      return Status::Ok();
    }
    made->cluster_ = true;
    lease = Lease();  // back to the pool before RefreshSlots borrows
    PROCESSOR_RETURN_IF_ERROR(made->RefreshSlots());
    *router = std::move(made);
    return Status::Ok();
  }
  return last;
}

RedisRouter::~RedisRouter() = default;

Status RedisRouter::RefreshSlots() {
  std::vector<RedisNode> candidates;
  {
    std::lock_guard<std::mutex> lock(mu_);
    candidates = nodes_;
    candidates.insert(candidates.end(), replicas_.begin(), replicas_.end());
  }
  candidates.insert(candidates.end(), settings_.seeds.begin(), settings_.seeds.end());
  Status last = Status::Unavailable("no Redis Cluster node to ask for the slot map");
  for (const RedisNode& node : candidates) {
    Lease lease;
    last = Borrow(node, &lease);
    if (!last.ok()) continue;
    ReplyPtr reply;
    last = lease->Command({"CLUSTER", "SLOTS"}, &reply);
    if (!last.ok()) continue;
    if (reply->type != REDIS_REPLY_ARRAY) {
      last = Status::Internal("Redis at " + node.Address() + " answered CLUSTER SLOTS with " +
                              (reply->type == REDIS_REPLY_ERROR ? std::string(reply->str, reply->len) : "no slot map"));
      continue;
    }
    std::vector<RedisNode> masters, replicas;
    std::array<uint16_t, kSlots> owner{};
    std::vector<bool> covered(kSlots, false);
    for (size_t i = 0; i < reply->elements; ++i) {
      const redisReply* range = reply->element[i];
      if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 || range->element[2]->type != REDIS_REPLY_ARRAY ||
          range->element[2]->elements < 2) {
        continue;
      }
      const redisReply* master = range->element[2];
      RedisNode owner_node{std::string(master->element[0]->str, master->element[0]->len),
                           static_cast<int>(master->element[1]->integer)};
      if (owner_node.host.empty()) owner_node.host = node.host;  // "" means: the node you asked
      size_t index = 0;
      while (index < masters.size() && !(masters[index] == owner_node)) ++index;
      if (index == masters.size()) masters.push_back(owner_node);
      for (size_t r = 3; r < range->elements; ++r) {
        const redisReply* replica = range->element[r];
        if (replica->type != REDIS_REPLY_ARRAY || replica->elements < 2 || replica->element[0]->type != REDIS_REPLY_STRING) continue;
        RedisNode node_of_replica{std::string(replica->element[0]->str, replica->element[0]->len),
                                  static_cast<int>(replica->element[1]->integer)};
        if (node_of_replica.host.empty()) node_of_replica.host = node.host;
        replicas.push_back(std::move(node_of_replica));
      }
      for (long long slot = range->element[0]->integer; slot <= range->element[1]->integer && slot < kSlots; ++slot) {
        if (slot < 0) continue;
        owner[slot] = static_cast<uint16_t>(index);
        covered[slot] = true;
      }
    }
    for (int slot = 0; slot < kSlots; ++slot) {
      if (!covered[slot]) return Status::Unavailable("the Redis Cluster does not serve slot " + std::to_string(slot) + " (cluster down?)");
    }
    std::lock_guard<std::mutex> lock(mu_);
    nodes_ = std::move(masters);
    replicas_ = std::move(replicas);
    slot_owner_ = owner;
    return Status::Ok();
  }
  return last;
}

void RedisRouter::RefreshSlotsAfterFailure() {
  std::unique_lock<std::mutex> refreshing(refresh_mu_, std::try_to_lock);
  if (!refreshing.owns_lock()) return;  // another lookup is rereading it
  const auto now = std::chrono::steady_clock::now();
  if (now - last_refresh_ < kRefreshInterval) return;
  last_refresh_ = now;
  RefreshSlots().ok();  // ignored: see the header
}

void RedisRouter::DropIdleConnections() {
  std::vector<RedisConnectionPool*> pools;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [node, pool] : pools_) pools.push_back(pool.get());
  }
  for (RedisConnectionPool* pool : pools) {
    std::vector<std::unique_ptr<RedisConnection>> closing;
    std::lock_guard<std::mutex> lock(pool->mu);
    pool->open -= static_cast<int>(pool->idle.size());
    closing.swap(pool->idle);
    pool->returned.notify_all();
  }
}

RedisNode RedisRouter::NodeFor(std::string_view key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return nodes_[cluster_ ? slot_owner_[Slot(key)] : 0];
}

RedisConnectionPool* RedisRouter::PoolFor(const RedisNode& node) {
  std::lock_guard<std::mutex> lock(mu_);
  std::unique_ptr<RedisConnectionPool>& pool = pools_[node];
  if (!pool) pool = std::make_unique<RedisConnectionPool>();
  return pool.get();
}

Status RedisRouter::Borrow(const RedisNode& node, Lease* lease) {
  RedisConnectionPool* pool = PoolFor(node);
  {
    std::unique_lock<std::mutex> lock(pool->mu);
    if (!pool->returned.wait_for(lock, kBorrowTimeout, [&] { return !pool->idle.empty() || pool->open < settings_.connections_per_node; })) {
      return Status::Unavailable("all " + std::to_string(settings_.connections_per_node) + " connections to Redis at " +
                                 node.Address() + " stayed busy (raise read_thread_num?)");
    }
    if (!pool->idle.empty()) {
      lease->connection_ = std::move(pool->idle.back());
      pool->idle.pop_back();
      lease->pool_ = pool;
      return Status::Ok();
    }
    if (std::chrono::steady_clock::now() < pool->retry_at) return pool->last_failure;
    ++pool->open;
  }
  std::unique_ptr<RedisConnection> connection;
  Status opened = RedisConnection::Open(node, settings_.password, settings_.timeouts, &connection);
  if (!opened.ok()) {
    std::lock_guard<std::mutex> lock(pool->mu);
    --pool->open;
    if (opened.code() == StatusCode::kUnavailable) {
      pool->retry_at = std::chrono::steady_clock::now() + kRetryAfter;
      pool->last_failure = opened;
    }
    pool->returned.notify_one();
    return opened;
  }
  lease->connection_ = std::move(connection);
  lease->pool_ = pool;
  return Status::Ok();
}

RedisRouter::Lease& RedisRouter::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Return();
    pool_ = other.pool_;
    connection_ = std::move(other.connection_);
    other.pool_ = nullptr;
  }
  return *this;
}

void RedisRouter::Lease::Return() {
  if (!pool_) return;
  std::lock_guard<std::mutex> lock(pool_->mu);
  if (connection_ && !connection_->broken()) {
    pool_->idle.push_back(std::move(connection_));
  } else {
    connection_.reset();
    --pool_->open;
  }
  pool_->returned.notify_one();
  pool_ = nullptr;
}

}  // namespace processor
