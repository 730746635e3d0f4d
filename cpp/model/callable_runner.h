// CallableRunner: one fixed list of feeds and fetches, run through TensorFlow's callable interface
// (Session::MakeCallable once, Session::RunCallable per request).
//
// On every call TF_SessionRun turns each port back into a "name:index" string, parses the serialized
// RunOptions, joins all the names into a key to find its executors, and allocates vectors to convert
// between TF_Tensor and Tensor. A callable resolves its names, run options and executors once; a run
// then takes a handle and the tensors. On the example model, with the graph in the calling thread,
// a bare RunCallable loop is 5-16 % faster than a bare TF_SessionRun loop at batch 1 and about 5 %
// at batch 512 (README, Performance).
//
// The C API has no callables, so this is the one file that uses TensorFlow's C++ API: it reaches the
// Session behind a TF_Session through the wheel's c_api_internal.h. The header below stays C API only.
#pragma once

#include <tensorflow/c/c_api.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"

namespace processor {

class CallableRunner {
 public:
  // Makes the callable, which creates its executors (what a first TF_SessionRun of these ports would
  // do). `inter_op_pool` is its runs' RunOptions.inter_op_thread_pool: -1 runs the ops in the calling
  // thread, kDefaultPool leaves the RunOptions empty (TF's defaults). Fails if the session has no
  // callable interface or TensorFlow refuses the feeds or fetches; the session itself is unchanged.
  static constexpr int kDefaultPool = -2;
  static Status Create(TF_Session* session, const std::vector<std::string>& feeds,
                       const std::vector<std::string>& fetches, int inter_op_pool, std::unique_ptr<CallableRunner>* runner);

  // Releases the callable; `session` must still be open.
  ~CallableRunner();
  CallableRunner(const CallableRunner&) = delete;
  CallableRunner& operator=(const CallableRunner&) = delete;

  // As TF_SessionRun: `values` (borrowed) are fed in the order of `feeds`, each of the fetches.size()
  // slots of `results` receives a tensor the caller owns, and `status` is set. Any number of threads
  // may run at once. The values are referenced only during the call, so the caller may write into them
  // again afterwards once TensorFlow itself holds them no longer (TF_TensorMaybeMove).
  void Run(TF_Tensor* const* values, TF_Tensor** results, TF_Status* status) const;

 private:
  CallableRunner(TF_Session* session, int64_t handle, size_t feeds, size_t fetches)
      : session_(session), handle_(handle), feeds_(feeds), fetches_(fetches) {}

  TF_Session* const session_;
  const int64_t handle_;
  const size_t feeds_, fetches_;
};

// The callables of one feed and fetch list (a signature), one per slot (each slot an inter-op pool),
// each made by its slot's first Get(): as TF_SessionRun makes its executors on first use, a signature
// no request names costs nothing, and one that some do costs what TF_SessionRun's executors would.
// Get() is safe from any number of threads; the callables are released with this object, which must
// go before the session closes.
class LazyCallables {
 public:
  // `what` names the list in the log line a refusal writes (empty: no line, the caller reports it).
  LazyCallables(TF_Session* session, std::vector<std::string> feeds, std::vector<std::string> fetches,
                std::vector<int> pools, std::string what);
  LazyCallables(const LazyCallables&) = delete;
  LazyCallables& operator=(const LazyCallables&) = delete;

  // Slot `slot`'s callable, made now on its first call; null when TensorFlow refused it (runs then go
  // through TF_SessionRun, as the log says once).
  const CallableRunner* Get(size_t slot) const;

  // "callable" once a slot's callable is made, "session_run" once TensorFlow refused one (error()
  // says why), "unmade" before the first Get().
  const char* state() const;
  std::string error() const;

 private:
  struct Slot {
    std::once_flag once;
    std::unique_ptr<CallableRunner> runner;
  };

  TF_Session* const session_;
  const std::vector<std::string> feeds_, fetches_;
  const std::vector<int> pools_;
  const std::string what_;
  const std::unique_ptr<Slot[]> slots_;
  mutable std::atomic<int> made_{0}, refused_{0};
  mutable std::mutex error_mutex_;
  mutable std::string error_;
};

}  // namespace processor
