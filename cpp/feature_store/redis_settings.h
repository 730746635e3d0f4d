// Where the Redis feature store is and how to reach it (no hiredis here: builds without it parse these
// and refuse "redis" at load with a clear error).
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace processor {

struct RedisNode {
  std::string host;
  int port = 6379;
  std::string Address() const { return host + ":" + std::to_string(port); }
  bool operator==(const RedisNode& other) const { return host == other.host && port == other.port; }
  bool operator<(const RedisNode& other) const { return host != other.host ? host < other.host : port < other.port; }
};

struct RedisTimeouts {
  int connect_ms = 1000;
  int io_ms = 2000;
};

struct RedisSettings {
  std::vector<RedisNode> seeds;  // redis_url: one server, or any nodes of a cluster
  std::string password;
  int connections_per_node = 4;  // read_thread_num: concurrent lookups per server
  RedisTimeouts timeouts;
};

// Parses "host:port[,host:port...]" (a "redis://" prefix is allowed).
Status ParseRedisUrl(const std::string& url, std::vector<RedisNode>* nodes);

}  // namespace processor
