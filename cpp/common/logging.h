// Minimal stderr logging for the data plane (the control plane logs through Python's `logging`).
#pragma once

#include <string>

namespace processor {

enum class LogLevel { kInfo, kWarning, kError };

void Log(LogLevel level, const std::string& message);

}  // namespace processor
