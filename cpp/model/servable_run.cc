// Servable, serving: a request's run, through the signature's TF callable on one of the serving
// pools, or through TF_SessionRun for what no callable covers (an output_filter, a traced run); with
// enable_batching, the batcher made at load, whose queued batches run in their leader's thread.
#include "model/servable.h"

#include <algorithm>
#include <mutex>
#include <shared_mutex>
#include <utility>

#include "common/logging.h"
#include "common/quote.h"
#include "common/shape_string.h"
#include "model/session_settings.h"

namespace processor {

const LazyCallables* Servable::WholeSignatureCallables(const std::vector<TF_Output>& inputs,
                                                       const std::vector<TF_Output>& outputs) const {
  const auto same = [](const TF_Output& a, const BoundTensor& b) {
    return a.oper == b.port.oper && a.index == b.port.index;
  };
  for (size_t s = 0; s < callables_.size(); ++s) {  // the main signature first
    const BoundSignature& signature = *signatures_[s];
    if (std::equal(inputs.begin(), inputs.end(), signature.inputs().begin(), signature.inputs().end(), same) &&
        std::equal(outputs.begin(), outputs.end(), signature.outputs().begin(), signature.outputs().end(), same)) {
      return callables_[s].get();
    }
  }
  return nullptr;
}

const char* Servable::RunInterface(const BoundSignature& signature, std::string* reason) const {
  for (size_t s = 0; s < callables_.size(); ++s) {
    if (signatures_[s].get() != &signature) continue;
    const char* state = callables_[s]->state();
    if (reason) *reason = callables_[s]->error();
    return state;
  }
  if (reason) *reason = callable_error_;
  return "session_run";
}

Status Servable::Run(const std::vector<TF_Output>& inputs, const OwnedTensors& values,
                     const std::vector<TF_Output>& outputs, OwnedTensors* results, std::string* run_metadata) const {
  return RunOn(inputs, values, outputs, results, run_metadata, /*in_caller=*/false);
}

Status Servable::RunOn(const std::vector<TF_Output>& inputs, const OwnedTensors& values,
                       const std::vector<TF_Output>& outputs, OwnedTensors* results, std::string* run_metadata,
                       bool in_caller) const {
  results->Reset(outputs.size());
  // One TF_Status per thread rather than a heap allocation per request; both ways of running set it
  // (to OK, or to the error).
  thread_local TfStatus status;
  BufferPtr metadata(run_metadata ? TF_NewBuffer() : nullptr);
  // TensorFlow's profiler traces one run at a time in the process ("Another profiling session
  // active" fails a second): traced runs (the timeline's few steps) take turns.
  static std::mutex tracing;
  std::unique_lock<std::mutex> one_trace(tracing, std::defer_lock);
  if (run_metadata) one_trace.lock();
  {
    std::shared_lock<WriterPreferringLock> shared(serving_lock_);
    const LazyCallables* callables = run_metadata ? nullptr : WholeSignatureCallables(inputs, outputs);
    const CallableRunner* callable = callables ? callables->Get(in_caller ? caller_slot() : ChooseServingPool()) : nullptr;
    if (callable) {
      callable->Run(values.data(), results->data(), status.get());
    } else {
      const TF_Buffer* options = run_metadata ? traced_run_options_.get()
                                 : in_caller  ? caller_run_options_.get()
                                              : serving_run_options_[ChooseServingPool()].get();
      TF_SessionRun(session_, options, inputs.data(), values.data(), static_cast<int>(inputs.size()), outputs.data(),
                    results->data(), static_cast<int>(outputs.size()), nullptr, 0, metadata.get(), status.get());
    }
  }
  if (metadata && metadata->data) run_metadata->assign(static_cast<const char*>(metadata->data), metadata->length);
  if (feature_store_ && !status.ok()) {
    // The store's words alone, without what TensorFlow appends (the node, the code it replaced).
    const std::string message = status.message();
    const size_t start = message.find(kStoreUnavailable);
    if (start != std::string::npos) {
      const size_t end = message.find('\n', start);
      return Status::Unavailable(message.substr(start, end == std::string::npos ? end : end - start));
    }
  }
  return status.ToStatus("running the model");
}

namespace {

// Why `signature` cannot be batched (an input or output without a batch dimension), or "".
std::string WhyUnbatched(const BoundSignature& signature) {
  for (const auto& [kind, tensors] : {std::pair{"input", &signature.inputs()}, std::pair{"output", &signature.outputs()}}) {
    for (const BoundTensor& tensor : *tensors) {
      const TensorSpec& spec = tensor.spec;
      if (spec.unknown_rank || (!spec.dims.empty() && spec.dims[0] < 0)) continue;  // a batch dimension, or maybe one
      return std::string(kind) + " " + Quote(spec.alias) + " has no batch dimension (shape " + ShapeString(spec.dims) +
             "; batching needs -1 first)";
    }
  }
  return "";
}

}  // namespace

void Servable::MakeBatcher(const BatchingOptions& options) {
  if (!options.enabled) return;
  for (const auto& signature : signatures_) {
    const std::string why = WhyUnbatched(*signature);
    if (why.empty()) {
      batched_signatures_.push_back(signature.get());
      continue;
    }
    Log(signature.get() == &this->signature() ? LogLevel::kWarning : LogLevel::kInfo,
        "enable_batching: signature " + Quote(signature->name()) + " is served unbatched: " + why);
  }
  if (batched_signatures_.empty()) return;
  // A batch runs its graph in the thread of the request that leads it, which would otherwise only wait
  // for TensorFlow's pool: no handoff to a pool thread and back per run (benchmarks/batching.py).
  const std::string encoded = EncodeRunOptions(-1);
  caller_run_options_.reset(TF_NewBufferFromString(encoded.data(), encoded.size()));
  if (!callables_.empty()) callables_.front()->Get(caller_slot());  // the main signature's, made at load
  batcher_ = std::make_unique<BatchScheduler>(
      options, [this](const std::vector<TF_Output>& inputs, const OwnedTensors& values,
                      const std::vector<TF_Output>& outputs, OwnedTensors* results, bool in_caller) {
        return RunOn(inputs, values, outputs, results, nullptr, in_caller);
      });
  Log(LogLevel::kInfo, "batching: concurrent requests merge, up to " + std::to_string(options.max_batch_size) +
                           " rows a run, " + std::to_string(batcher_->run_slots()) + " run(s) at once, " +
                           (options.batch_timeout_micros > 0
                                ? "a batch waits up to " + std::to_string(options.batch_timeout_micros) + " us to fill"
                                : std::string("no request waits for a timer")));
}

size_t Servable::ChooseServingPool() const {
  const size_t pools = serving_run_options_.size();
  if (pools == 1) return 0;
  size_t pool;
  if (policy_ == SessionPolicy::kRoundRobin) {
    pool = round_robin_.fetch_add(1, std::memory_order_relaxed) % pools;
  } else {  // MOD: a thread keeps its pool, so a host's worker threads spread over the pools
    static std::atomic<size_t> next_thread{0};
    thread_local const size_t thread_number = next_thread.fetch_add(1, std::memory_order_relaxed);
    pool = thread_number % pools;
  }
  return pool;
}

}  // namespace processor
