// Servable, serving: a request's run, through the signature's TF callable on one of the serving
// pools, or through TF_SessionRun for what no callable covers (an output_filter, a traced run).
#include "model/servable.h"

#include <shared_mutex>

namespace processor {

bool Servable::IsWholeSignature(const std::vector<TF_Output>& inputs, const std::vector<TF_Output>& outputs) const {
  if (inputs.size() != inputs_.size() || outputs.size() != outputs_.size()) return false;
  const auto same = [](const TF_Output& a, const TF_Output& b) { return a.oper == b.oper && a.index == b.index; };
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!same(inputs[i], inputs_[i].port)) return false;
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (!same(outputs[i], outputs_[i].port)) return false;
  }
  return true;
}

Status Servable::Run(const std::vector<TF_Output>& inputs, const OwnedTensors& values,
                     const std::vector<TF_Output>& outputs, OwnedTensors* results, std::string* run_metadata) const {
  results->Reset(outputs.size());
  // One TF_Status per thread rather than a heap allocation per request; both ways of running set it
  // (to OK, or to the error).
  thread_local TfStatus status;
  BufferPtr metadata(run_metadata ? TF_NewBuffer() : nullptr);
  {
    std::shared_lock<WriterPreferringLock> shared(serving_lock_);
    if (!run_metadata && !serving_callables_.empty() && IsWholeSignature(inputs, outputs)) {
      serving_callables_[ChooseServingPool()]->Run(values.data(), results->data(), status.get());
    } else {
      TF_SessionRun(session_, run_metadata ? traced_run_options_.get() : serving_run_options_[ChooseServingPool()].get(),
                    inputs.data(), values.data(), static_cast<int>(inputs.size()), outputs.data(), results->data(),
                    static_cast<int>(outputs.size()), nullptr, 0, metadata.get(), status.get());
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
