// RedisConnection: one hiredis connection, pipelined (commands queued, flushed, then replies read).
// Any I/O error leaves it broken(); the pool then drops it and opens a new one on demand.
#pragma once

#include <hiredis/hiredis.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "feature_store/redis_settings.h"

namespace processor {

struct ReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

class RedisConnection {
 public:
  // Connects and authenticates (when `password` is not empty). Unavailable when the server cannot be
  // reached; Internal when it refuses the password (never echoed).
  static Status Open(const RedisNode& node, const std::string& password, const RedisTimeouts& timeouts,
                     std::unique_ptr<RedisConnection>* connection);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  const RedisNode& node() const { return node_; }
  bool broken() const { return context_->err != 0 || pending_ != 0; }

  // Queues a command; its arguments are copied (formatted) at once.
  void Append(const std::vector<std::string_view>& argv);
  // Sends what is queued.
  Status Flush();
  // The next reply, in the order commands were queued.
  Status Read(ReplyPtr* reply);
  // Append + Flush + Read.
  Status Command(const std::vector<std::string_view>& argv, ReplyPtr* reply);

 private:
  RedisConnection(RedisNode node, redisContext* context) : node_(std::move(node)), context_(context) {}
  Status IoError(const char* doing) const;

  RedisNode node_;
  redisContext* context_;
  int pending_ = 0;  // replies not read yet: a connection returned with some is unusable
  std::vector<const char*> argv_;
  std::vector<size_t> lengths_;
};

}  // namespace processor
