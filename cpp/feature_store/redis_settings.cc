#include "feature_store/redis_settings.h"

#include <cstdlib>

namespace processor {

Status ParseRedisUrl(const std::string& url, std::vector<RedisNode>* nodes) {
  size_t start = 0;
  while (start <= url.size()) {
    size_t comma = url.find(',', start);
    if (comma == std::string::npos) comma = url.size();
    std::string part = url.substr(start, comma - start);
    start = comma + 1;
    while (!part.empty() && part.front() == ' ') part.erase(part.begin());
    while (!part.empty() && part.back() == ' ') part.pop_back();
    if (part.empty()) continue;
    const size_t scheme = part.find("://");
    if (scheme != std::string::npos) part = part.substr(scheme + 3);
    const size_t colon = part.rfind(':');
    char* end = nullptr;
    const long port = colon == std::string::npos ? 0 : std::strtol(part.c_str() + colon + 1, &end, 10);
    if (colon == std::string::npos || colon == 0 || !end || *end != '\0' || port <= 0 || port > 65535) {
      return Status::InvalidArgument("redis_url: '" + part + "' is not host:port");
    }
    nodes->push_back(RedisNode{part.substr(0, colon), static_cast<int>(port)});
  }
  if (nodes->empty()) return Status::InvalidArgument("redis_url names no server");
  return Status::Ok();
}

}  // namespace processor
