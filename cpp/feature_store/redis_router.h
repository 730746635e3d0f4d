// RedisRouter: which server holds a key, and a pool of connections to each.
//
// One server, or a Redis Cluster: the slot of a key is CRC16 of its hash tag mod 16384, the slot map
// comes from CLUSTER SLOTS (asked of any reachable node, masters, replicas or seeds) and is refreshed
// when a server answers MOVED or is out of reach (a replica may have taken over its slots). A server
// that refused a connection is not dialled again for kRetryAfter: lookups meanwhile fail at once
// instead of each waiting out a connect timeout.
// No C/C++ cluster client is packaged for this platform (Debian has hiredis only), so routing is this
// small layer over hiredis, tested against a real 3-master cluster.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "feature_store/redis_connection.h"
#include "feature_store/redis_settings.h"

namespace processor {

// The connections to one server: idle ones, and how many exist (idle + lent).
struct RedisConnectionPool {
  std::mutex mu;
  std::condition_variable returned;
  std::vector<std::unique_ptr<RedisConnection>> idle;
  int open = 0;
  std::chrono::steady_clock::time_point retry_at;  // after a failed connect: not before
  Status last_failure;
};

class RedisRouter {
 public:
  static constexpr int kSlots = 16384;
  static int Slot(std::string_view key);

  // Connects to the seeds and learns whether they form a cluster (and its slot map).
  static Status Connect(const RedisSettings& settings, std::shared_ptr<RedisRouter>* router);

  // A connection borrowed from a node's pool; returned on destruction (dropped if broken).
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept : pool_(other.pool_), connection_(std::move(other.connection_)) { other.pool_ = nullptr; }
    Lease& operator=(Lease&& other) noexcept;
    ~Lease() { Return(); }
    RedisConnection* operator->() const { return connection_.get(); }
    RedisConnection& operator*() const { return *connection_; }

   private:
    friend class RedisRouter;
    void Return();
    RedisConnectionPool* pool_ = nullptr;
    std::unique_ptr<RedisConnection> connection_;
  };

  bool cluster() const { return cluster_; }
  RedisNode NodeFor(std::string_view key) const;
  Status Borrow(const RedisNode& node, Lease* lease);
  // Closes every idle connection (after one failed: a restarted server has closed them all).
  void DropIdleConnections();
  // Rereads the slot map (after MOVED).
  Status RefreshSlots();
  // Rereads it after a server was out of reach, at most once per kRefreshInterval however many lookups
  // failed; a failure is ignored (the lookup's own error is its answer).
  void RefreshSlotsAfterFailure();
  static constexpr std::chrono::milliseconds kRetryAfter{250};
  static constexpr std::chrono::milliseconds kRefreshInterval{100};
  ~RedisRouter();

 private:
  explicit RedisRouter(RedisSettings settings) : settings_(std::move(settings)) {}
  RedisConnectionPool* PoolFor(const RedisNode& node);

  const RedisSettings settings_;
  bool cluster_ = false;
  mutable std::mutex mu_;  // guards what follows
  std::vector<RedisNode> nodes_;              // masters (or the one server)
  std::vector<RedisNode> replicas_;           // a cluster's, to ask for the slot map when masters are gone
  std::mutex refresh_mu_;                     // one RefreshSlotsAfterFailure at a time
  std::chrono::steady_clock::time_point last_refresh_;  // guarded by refresh_mu_
  std::array<uint16_t, kSlots> slot_owner_{};  // index into nodes_
  std::map<RedisNode, std::unique_ptr<RedisConnectionPool>> pools_;
};

}  // namespace processor
