#include "batching/batch_scheduler.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "batching/batch_tensors.h"
#include "common/logging.h"

namespace processor {

using Clock = std::chrono::steady_clock;

struct BatchScheduler::Pending {
  const std::vector<TF_Output>* inputs;
  const OwnedTensors* values;
  const std::vector<TF_Output>* outputs;
  OwnedTensors* results;
  int64_t rows = -1;  // -1: cannot merge
  Clock::time_point queued_at;
  // Written once by another thread (Promote, or the batch's leader), after everything it hands over;
  // the waiter reads it without mu_ (a futex word: no mutex to take again on waking).
  enum State : int { kQueued, kLead, kDone, kAlone };
  std::atomic<int> state{kQueued};
  bool alone = false;  // set by the batch's leader: run again alone
  Status status;

  void Hand(State to) {
    state.store(to, std::memory_order_release);
    // The waiter may have seen the store and returned already: waking its word then wakes no one
    // (its thread's stack stays mapped; a FUTEX_WAKE that finds no waiter does nothing).
    syscall(SYS_futex, &state, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
  }
  void Await() {
    while (state.load(std::memory_order_acquire) == kQueued) {
      syscall(SYS_futex, &state, FUTEX_WAIT_PRIVATE, kQueued, nullptr, nullptr, 0);
    }
  }
};

namespace {

// Each run holds a core in the thread of the request leading it; the other half of the cores decode,
// encode and do the host's own work (benchmarks/batching.py: on 2 cores, one slot forms batches of ~9
// from 16 threads of batch 1 and gives 3.5x unbatched, two slots batches of ~4 and 2.3x).
int RunSlots(const BatchingOptions& options) {
  if (options.num_batch_threads > 0) return options.num_batch_threads;
  cpu_set_t cpus;
  const int cores = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus)
                                                                  : static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, cores / 2);
}

int Bucket(uint64_t value, uint64_t first_bound) {
  int i = 0;
  while (i < BatchScheduler::kBuckets - 1 && value > (first_bound << i)) ++i;
  return i;
}

}  // namespace

BatchScheduler::BatchScheduler(const BatchingOptions& options, RunFn run)
    : options_(options),
      run_(std::move(run)),
      run_slots_(RunSlots(options)),
      max_queued_rows_(options.max_enqueued_batches * options.max_batch_size) {}

Status BatchScheduler::RunAlone(const Pending& p, bool in_caller) const {
  return run_(*p.inputs, *p.values, *p.outputs, p.results, in_caller);
}

bool BatchScheduler::Mergeable(const Pending& a, const Pending& b) const {
  if (a.outputs->size() != b.outputs->size() || a.values->size() != b.values->size() ||
      a.inputs->size() != b.inputs->size()) {
    return false;
  }
  // The same ports, fed and fetched: requests of two signatures never merge, even with equal outputs.
  const auto same = [](const std::vector<TF_Output>& x, const std::vector<TF_Output>& y) {
    for (size_t i = 0; i < x.size(); ++i) {
      if (x[i].oper != y[i].oper || x[i].index != y[i].index) return false;
    }
    return true;
  };
  if (!same(*a.outputs, *b.outputs) || !same(*a.inputs, *b.inputs)) return false;
  for (size_t i = 0; i < a.values->size(); ++i) {
    if (!SameRowShape((*a.values)[i], (*b.values)[i])) return false;
  }
  return true;
}

int64_t BatchScheduler::PaddedRows(int64_t rows) const {
  for (int64_t allowed : options_.allowed_batch_sizes) {
    if (allowed >= rows) return allowed;
  }
  return rows;
}

Status BatchScheduler::Run(const std::vector<TF_Output>& inputs, const OwnedTensors& values,
                           const std::vector<TF_Output>& outputs, OwnedTensors* results) {
  Pending me;
  me.inputs = &inputs;
  me.values = &values;
  me.outputs = &outputs;
  me.results = results;
  for (size_t i = 0; i < values.size(); ++i) {
    const int64_t rows = LeadingRows(values[i]);
    if (rows < 1 || rows > options_.max_batch_size || (i > 0 && rows != me.rows)) {
      me.rows = -1;
      break;
    }
    me.rows = rows;
  }
  if (me.rows < 0 || !merging_.load(std::memory_order_relaxed)) return RunAlone(me, false);

  std::unique_lock<std::mutex> lock(mu_);
  const bool timed = options_.batch_timeout_micros > 0;
  if (!timed && queue_.empty() && in_flight_ < run_slots_) {  // a free slot: run now, adding no wait
    ++in_flight_;
    CountRun(me.rows, /*merged=*/false);
    ++stats_.queue_delay_us[0];
    lock.unlock();
    Status status;
    try {
      status = RunAlone(me, false);
    } catch (...) {  // the slot goes back whatever happens; the caller's catch answers
      ReleaseSlot({});
      throw;
    }
    ReleaseSlot({});
    return status;
  }
  if (queued_rows_ + me.rows > max_queued_rows_) {
    ++stats_.rejected;
    return Status::Unavailable("the batching queue is full: " + std::to_string(queued_rows_) + " rows wait for " +
                               std::to_string(run_slots_) + " run(s) in flight (max_enqueued_batches " +
                               std::to_string(options_.max_enqueued_batches) + " x max_batch_size " +
                               std::to_string(options_.max_batch_size) + "); retry later");
  }
  me.queued_at = Clock::now();
  queue_.push_back(&me);
  queued_rows_ += me.rows;
  ++stats_.queued;
  if (timed) fill_.notify_all();
  Promote();
  lock.unlock();
  AwaitTurn(&me);
  if (me.state.load(std::memory_order_acquire) == Pending::kLead) {
    lock.lock();
    std::vector<Pending*> members;
    try {
      members.push_back(&me);
      if (timed) {
        fill_.wait_until(lock, me.queued_at + std::chrono::microseconds(options_.batch_timeout_micros),
                         [&] { return MergeableRows(me) >= options_.max_batch_size; });
      }
      Collect(&me, &members);
      lock.unlock();
      RunBatch(members);
    } catch (...) {  // out of memory: every member is answered, and the slot goes back
      me.status = Status::Internal("out of memory batching the request");
      for (Pending* p : members) p->status = me.status, p->alone = false;
    }
    if (lock.owns_lock()) lock.unlock();
    ReleaseSlot(members);
    if (!me.alone) return me.status;
  }
  return me.state.load(std::memory_order_acquire) == Pending::kDone ? me.status : RunAlone(me, true);
}

void BatchScheduler::ReleaseSlot(const std::vector<Pending*>& members) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_;
    Promote();
  }
  for (size_t i = 1; i < members.size(); ++i) {  // members[0] is the caller
    members[i]->Hand(members[i]->alone ? Pending::kAlone : Pending::kDone);
  }
}

void BatchScheduler::CountRun(int64_t rows, bool merged) {
  ++stats_.runs;
  if (merged) ++stats_.merged_runs;
  ++stats_.batch_rows[Bucket(static_cast<uint64_t>(rows), 1)];
  stats_.rows_sum += static_cast<uint64_t>(rows);
}

void BatchScheduler::AwaitTurn(Pending* me) {
  // Its turn comes within a run or two: yielding the core meanwhile, rather than sleeping at once,
  // spares the futex wake-up (two context switches) that costs about what merging saves per row.
  const auto give_up = Clock::now() + std::chrono::microseconds(kSpinMicros);
  while (me->state.load(std::memory_order_acquire) == Pending::kQueued && Clock::now() < give_up) sched_yield();
  me->Await();
}

void BatchScheduler::Promote() {
  while (in_flight_ < run_slots_ && !queue_.empty()) {
    Pending* next = queue_.front();
    queue_.pop_front();
    queued_rows_ -= next->rows;
    ++in_flight_;
    next->Hand(Pending::kLead);
  }
}

int64_t BatchScheduler::MergeableRows(const Pending& leader) const {
  int64_t rows = leader.rows;
  for (const Pending* p : queue_) rows += Mergeable(leader, *p) ? p->rows : 0;
  return rows;
}

void BatchScheduler::Collect(Pending* leader, std::vector<Pending*>* members) {
  int64_t rows = leader->rows;
  for (auto it = queue_.begin(); it != queue_.end() && rows < options_.max_batch_size;) {
    Pending* p = *it;
    if (rows + p->rows <= options_.max_batch_size && Mergeable(*leader, *p)) {
      members->push_back(p);
      rows += p->rows;
      queued_rows_ -= p->rows;
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  const auto now = Clock::now();
  for (const Pending* p : *members) {
    const auto waited = std::chrono::duration_cast<std::chrono::microseconds>(now - p->queued_at).count();
    ++stats_.queue_delay_us[Bucket(static_cast<uint64_t>(waited), 10)];
    stats_.queue_delay_sum_us += static_cast<uint64_t>(waited);
  }
  CountRun(members->size() > 1 ? PaddedRows(rows) : rows, members->size() > 1);  // what TensorFlow runs
}

void BatchScheduler::RunBatch(const std::vector<Pending*>& members) {
  const auto all_alone = [&] {
    for (Pending* p : members) p->alone = true;
  };
  if (members.size() == 1) {
    members[0]->status = RunAlone(*members[0], true);
    return;
  }
  const Pending& first = *members[0];
  int64_t rows = 0;
  for (const Pending* p : members) rows += p->rows;
  const int64_t padded = PaddedRows(rows);
  OwnedTensors merged;
  merged.Reset(first.values->size());
  std::vector<const TF_Tensor*> parts(members.size());
  for (size_t i = 0; i < first.values->size(); ++i) {
    for (size_t m = 0; m < members.size(); ++m) parts[m] = (*members[m]->values)[i];
    TensorPtr tensor = ConcatRows(parts.data(), parts.size(), padded);
    if (!tensor) return all_alone();
    merged.Set(i, std::move(tensor));
  }
  OwnedTensors results;
  const Status status = run_(*first.inputs, merged, *first.outputs, &results, true);
  if (!status.ok()) {
    if (status.code() == StatusCode::kUnavailable) {  // the store or the process, not a request's data
      for (Pending* p : members) p->status = status;
      return;
    }
    all_alone();  // whose data failed it is unknown: each runs again alone, and only its own fails
    std::lock_guard<std::mutex> lock(mu_);
    stats_.reruns += members.size();
    return;
  }
  for (size_t j = 0; j < results.size(); ++j) {
    if (LeadingRows(results[j]) != padded) {
      if (merging_.exchange(false)) {
        Log(LogLevel::kWarning, "batching turned off for this model version: output " + std::to_string(j) +
                                    " of a merged run of " + std::to_string(padded) + " rows has " +
                                    (TF_NumDims(results[j]) ? std::to_string(LeadingRows(results[j])) + " rows"
                                                            : std::string("no rows (a scalar)")) +
                                    "; requests run alone from now on");
      }
      return all_alone();
    }
  }
  int64_t first_row = 0;
  for (Pending* p : members) {
    p->results->Reset(results.size());
    for (size_t j = 0; j < results.size() && p->status.ok(); ++j) {
      TensorPtr slice = SliceRows(results[j], first_row, p->rows);
      if (!slice) p->status = Status::Internal("out of memory splitting a merged run's outputs");
      else p->results->Set(j, std::move(slice));
    }
    first_row += p->rows;
  }
}

BatchScheduler::Stats BatchScheduler::Read() const {
  std::lock_guard<std::mutex> lock(mu_);
  Stats stats = stats_;
  stats.queued_rows = queued_rows_;
  return stats;
}

}  // namespace processor
