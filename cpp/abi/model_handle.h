// The object behind the ABI's opaque `void* model_buf`.
#pragma once

#include "serving/version_manager.h"

namespace processor {

struct ModelHandle {
  // Tells a real handle from a stray pointer in debug checks and post-mortems.
  static constexpr unsigned kMagic = 0x50524f43;  // "PROC"
  unsigned magic = kMagic;
  VersionManager versions;
};

}  // namespace processor
