#include "feature_store/redis_connection.h"

#include <sys/time.h>

#include <cstring>

namespace processor {
namespace {

timeval Milliseconds(int ms) { return timeval{ms / 1000, (ms % 1000) * 1000}; }

}  // namespace

Status RedisConnection::Open(const RedisNode& node, const std::string& password, const RedisTimeouts& timeouts,
                             std::unique_ptr<RedisConnection>* connection) {
  redisContext* context = redisConnectWithTimeout(node.host.c_str(), node.port, Milliseconds(timeouts.connect_ms));
  if (!context) return Status::Unavailable("cannot reach Redis at " + node.Address() + ": out of memory");
  std::unique_ptr<RedisConnection> opened(new RedisConnection(node, context));
  if (context->err) return opened->IoError("connecting");
  redisSetTimeout(context, Milliseconds(timeouts.io_ms));
  if (!password.empty()) {
    ReplyPtr reply;
    PROCESSOR_RETURN_IF_ERROR(opened->Command({"AUTH", password}, &reply));
    if (reply->type == REDIS_REPLY_ERROR) {
      // The server's words (WRONGPASS..., or "no password is set"), never the password.
      return Status::Internal("Redis at " + node.Address() + " refused the password (check redis_password): " +
                              std::string(reply->str, reply->len));
    }
  }
  *connection = std::move(opened);
  return Status::Ok();
}

RedisConnection::~RedisConnection() { redisFree(context_); }

Status RedisConnection::IoError(const char* doing) const {
  std::string reason = context_->errstr[0] ? context_->errstr : "connection lost";
  if (context_->err == REDIS_ERR_EOF) reason = "the server closed the connection";
  return Status::Unavailable(std::string("Redis at ") + node_.Address() + " (" + doing + "): " + reason);
}

void RedisConnection::Append(const std::vector<std::string_view>& argv) {
  argv_.clear();
  lengths_.clear();
  for (std::string_view arg : argv) {
    argv_.push_back(arg.data());
    lengths_.push_back(arg.size());
  }
  redisAppendCommandArgv(context_, static_cast<int>(argv_.size()), argv_.data(), lengths_.data());
  ++pending_;
}

Status RedisConnection::Flush() {
  int done = 0;
  while (!done) {
    if (redisBufferWrite(context_, &done) != REDIS_OK) return IoError("sending");
  }
  return Status::Ok();
}

Status RedisConnection::Read(ReplyPtr* reply) {
  void* raw = nullptr;
  if (redisGetReply(context_, &raw) != REDIS_OK || !raw) return IoError("reading");
  reply->reset(static_cast<redisReply*>(raw));
  --pending_;
  return Status::Ok();
}

Status RedisConnection::Command(const std::vector<std::string_view>& argv, ReplyPtr* reply) {
  Append(argv);
  PROCESSOR_RETURN_IF_ERROR(Flush());
  return Read(reply);
}

}  // namespace processor
