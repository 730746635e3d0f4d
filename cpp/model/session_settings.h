// TF session options built from the config's thread settings.
#pragma once

#include "common/status.h"
#include "common/tf_handles.h"

namespace processor {

enum class SessionPolicy { kMod, kRoundRobin };

struct SessionSettings {
  // The config's names (protos/control.proto's SessionSettings).
  int intra_op_parallelism_threads = 0;  // 0: TF picks (one per core); process-wide pool
  int inter_op_parallelism_threads = 0;  // threads of each serving pool; 0: TF picks
  int session_num = 1;                   // serving pools in the session group
  SessionPolicy select_session_policy = SessionPolicy::kMod;
  bool use_per_session_threads = false;  // the serving pool belongs to this session alone
  bool enable_inline_execute = false;    // serving runs execute ops in the caller's thread
  int model_update_inter_threads = 0;    // the pool loads, restores and deltas run on; 0: TF picks
};

// Serialized ConfigProto with session_num + 1 inter-op pools: the serving pools 0..session_num-1 (the
// session's own with use_per_session_threads, else the global "processor_serving_<size>_<i>"), then the
// update pool (the global "processor_update_<size>"), so that loading a version never takes serving
// threads. Runs pick their pool with RunOptions.
std::string EncodeConfigProto(const SessionSettings& settings);

// Serialized RunOptions selecting `pool`, or running in the caller's thread (pool -1); with
// `full_trace`, the run also records step stats into its RunMetadata.
std::string EncodeRunOptions(int pool, bool full_trace = false);

Status MakeSessionOptions(const SessionSettings& settings, SessionOptionsPtr* options);

// Index of the update pool in the ConfigProto above.
inline int UpdatePoolIndex(const SessionSettings& settings) { return settings.session_num; }

}  // namespace processor
