#include "common/logging.h"

#include <cstdio>

namespace processor {

void Log(LogLevel level, const std::string& message) {
  const char* tag = level == LogLevel::kError ? "E" : level == LogLevel::kWarning ? "W" : "I";
  // One fprintf per line so that lines from concurrent threads do not interleave.
  std::fprintf(stderr, "[processor %s] %s\n", tag, message.c_str());
}

}  // namespace processor
