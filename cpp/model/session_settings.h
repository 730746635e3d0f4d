// TF session options built from the config's thread settings.
#pragma once

#include "common/status.h"
#include "common/tf_handles.h"

namespace processor {

struct SessionSettings {
  int intra_op_threads = 0;   // 0: TF picks (one per core)
  int inter_op_threads = 0;   // 0: TF picks
  bool use_per_session_threads = false;
  bool inline_execute = false;  // run ops in the caller's thread (ConfigProto inter_op = -1)
};

// Serialized ConfigProto for the settings (only the fields we set).
std::string EncodeConfigProto(const SessionSettings& settings);

Status MakeSessionOptions(const SessionSettings& settings, SessionOptionsPtr* options);

}  // namespace processor
