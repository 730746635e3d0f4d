// TF session options built from the config's thread settings.
#pragma once

#include "common/status.h"
#include "common/tf_handles.h"

namespace processor {

struct SessionSettings {
  int intra_op_threads = 0;         // 0: TF picks (one per core); process-wide pool
  int inter_op_threads = 0;         // serving pool; 0: TF picks
  bool use_per_session_threads = false;  // the serving pool belongs to this session alone
  bool inline_execute = false;      // serving runs execute ops in the caller's thread
  int update_inter_op_threads = 0;  // the pool loads, restores and deltas run on; 0: TF picks
};

// Index of the inter-op pool (ConfigProto.session_inter_op_thread_pool) each kind of run uses.
enum : int { kServingPool = 0, kUpdatePool = 1 };

// Serialized ConfigProto: two inter-op pools, serving (per session, or the global
// "processor_serving_<size>") and update (the global "processor_update_<size>"), so that loading a
// version never takes serving threads.
std::string EncodeConfigProto(const SessionSettings& settings);

// Serialized RunOptions selecting `pool`, or running in the caller's thread (pool -1).
std::string EncodeRunOptions(int pool);

Status MakeSessionOptions(const SessionSettings& settings, SessionOptionsPtr* options);

}  // namespace processor
