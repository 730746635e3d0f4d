// BatchScheduler: concurrent requests of one model version merged along dimension 0, run once, and
// each caller given its own rows back (the config's enable_batching; docs/batching.md).
//
// No thread of its own and, by default, no timer: the callers' threads run the batches. A request
// that finds a run slot free (num_batch_threads of them; by default one per two cores) runs at once,
// alone, as it would without batching; one that finds them all busy queues, and when a run ends the
// oldest queued request leads the next one with every queued request it can merge with (same
// inputs and outputs, same row shapes, up to max_batch_size rows), running it in its own thread. So an idle
// model adds no wait, and under load batches grow to what arrives during one run. With
// batch_timeout_micros (TF Serving's fixed behaviour) a leader waits up to that long for a full batch.
//
// A merged run that fails is run again by each member alone, so that one request's bad data never
// fails another's; a run whose outputs do not have the merged rows turns merging off for the version.
#pragma once

#include <tensorflow/c/c_api.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/tf_handles.h"

namespace processor {

// protos/control.proto's Batching: TF Serving's BatchingParameters, with its defaults.
struct BatchingOptions {
  bool enabled = false;
  int64_t max_batch_size = 1000;       // rows in one run
  int64_t batch_timeout_micros = 0;    // 0: no request waits for a timer (adaptive)
  int64_t max_enqueued_batches = 10;   // the queue holds this many batches' rows; beyond: 503
  int num_batch_threads = 0;           // runs at once; 0: one per two cores
  std::vector<int64_t> allowed_batch_sizes;  // a run is padded to the first that holds its rows
};

class BatchScheduler {
 public:
  // What runs a batch: the version's Servable::Run, on its serving pools, or (in_caller: a batch that
  // queued, whose leader would only wait for the pool) in the calling thread.
  using RunFn = std::function<Status(const std::vector<TF_Output>& inputs, const OwnedTensors& values,
                                     const std::vector<TF_Output>& outputs, OwnedTensors* results, bool in_caller)>;

  BatchScheduler(const BatchingOptions& options, RunFn run);
  BatchScheduler(const BatchScheduler&) = delete;
  BatchScheduler& operator=(const BatchScheduler&) = delete;

  // As run(inputs, values, outputs, results), merged with concurrent requests when it can be: every
  // value has rank >= 1 and the same number of rows (1..max_batch_size). Others run alone.
  Status Run(const std::vector<TF_Output>& inputs, const OwnedTensors& values, const std::vector<TF_Output>& outputs,
             OwnedTensors* results);

  // The counters behind the metrics (serving/metrics_exposition.h).
  static constexpr int kBuckets = 16;  // batch rows: 1, 2, 4, ... 2^14, more; delay: 10 us doubling
  struct Stats {
    std::array<uint64_t, kBuckets> batch_rows{};      // runs by rows (non-cumulative, bucket i: <= 2^i)
    std::array<uint64_t, kBuckets> queue_delay_us{};  // queued requests by wait (bucket i: <= 10 << i us)
    uint64_t runs = 0, merged_runs = 0, queued = 0, rejected = 0, reruns = 0;
    uint64_t rows_sum = 0, queue_delay_sum_us = 0;
    int64_t queued_rows = 0;  // waiting now
  };
  Stats Read() const;
  const BatchingOptions& options() const { return options_; }
  int run_slots() const { return run_slots_; }
  bool merging() const { return merging_.load(std::memory_order_relaxed); }

 private:
  struct Pending;
  Status RunAlone(const Pending& p, bool in_caller) const;
  // The rows `leader` could run with now: its own and the queued ones it merges with; under mu_.
  int64_t MergeableRows(const Pending& leader) const;
  // Takes queued requests that merge with `leader` into `members`; under mu_.
  void Collect(Pending* leader, std::vector<Pending*>* members);
  // Runs a batch: merged when it has several members, each member's results and status set.
  void RunBatch(const std::vector<Pending*>& members);
  // Waits, without mu_, until `me` leads a batch or its batch has run.
  static void AwaitTurn(Pending* me);
  static constexpr int kSpinMicros = 100;
  // Gives the caller's run slot back and promotes (under mu_), then answers the batch's other members.
  void ReleaseSlot(const std::vector<Pending*>& members);
  void CountRun(int64_t rows, bool merged);  // under mu_
  // Hands free run slots to the oldest queued requests; under mu_.
  void Promote();
  int64_t PaddedRows(int64_t rows) const;
  bool Mergeable(const Pending& a, const Pending& b) const;

  const BatchingOptions options_;
  const RunFn run_;
  const int run_slots_;
  const int64_t max_queued_rows_;
  std::atomic<bool> merging_{true};

  mutable std::mutex mu_;
  std::condition_variable fill_;  // a leader waiting for a full batch (batch_timeout_micros)
  std::deque<Pending*> queue_;
  int64_t queued_rows_ = 0;
  int in_flight_ = 0;
  Stats stats_;
};

}  // namespace processor
