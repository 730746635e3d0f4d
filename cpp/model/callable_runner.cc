#include "model/callable_runner.h"

#include "common/logging.h"

// TensorFlow's C++ API, for this file only (see the header). The TF_Session struct and the
// TF_Tensor <-> Tensor conversions are the C API's own, as TF_SessionRun uses them.
#include "tensorflow/c/c_api_internal.h"
#include "tensorflow/c/tf_tensor_helper.h"
#include "tensorflow/core/protobuf/config.pb.h"
#include "tensorflow/core/public/session.h"

namespace processor {
namespace {

void SetStatus(const absl::Status& from, TF_Status* to) {
  TF_SetStatus(to, static_cast<TF_Code>(from.code()), std::string(from.message()).c_str());
}

// A thread's feed and fetch vectors, kept for their capacity.
struct RunVectors {
  std::vector<tensorflow::Tensor> feeds, fetches;
};

}  // namespace

Status CallableRunner::Create(TF_Session* session, const std::vector<std::string>& feeds,
                              const std::vector<std::string>& fetches, int inter_op_pool,
                              std::unique_ptr<CallableRunner>* runner) {
  tensorflow::CallableOptions options;
  for (const std::string& feed : feeds) options.add_feed(feed);
  for (const std::string& fetch : fetches) options.add_fetch(fetch);
  if (inter_op_pool != kDefaultPool) options.mutable_run_options()->set_inter_op_thread_pool(inter_op_pool);
  tensorflow::Session::CallableHandle handle = 0;
  const absl::Status made = session->session->MakeCallable(options, &handle);
  if (!made.ok()) return Status::Internal("TensorFlow made no callable: " + std::string(made.message()));
  runner->reset(new CallableRunner(session, handle, feeds.size(), fetches.size()));
  return Status::Ok();
}

CallableRunner::~CallableRunner() { session_->session->ReleaseCallable(handle_).IgnoreError(); }

void CallableRunner::Run(TF_Tensor* const* values, TF_Tensor** results, TF_Status* status) const {
  thread_local RunVectors vectors;
  std::vector<tensorflow::Tensor>& feeds = vectors.feeds;
  std::vector<tensorflow::Tensor>& fetches = vectors.fetches;
  feeds.resize(feeds_);
  absl::Status outcome;
  for (size_t i = 0; i < feeds_ && outcome.ok(); ++i) {
    outcome = values[i] ? tensorflow::TF_TensorToTensor(values[i], &feeds[i])
                        : absl::InvalidArgumentError("feed " + std::to_string(i) + " has no tensor");
  }
  if (outcome.ok()) outcome = session_->session->RunCallable(handle_, feeds, &fetches, nullptr);
  // Dropping our references leaves TensorFlow's (if it kept any) as the only ones, which is what lets
  // the caller's next request write into the same tensors.
  feeds.clear();
  for (size_t i = 0; i < fetches.size() && i < fetches_ && outcome.ok(); ++i) {
    results[i] = tensorflow::TF_TensorFromTensor(fetches[i], &outcome);
  }
  fetches.clear();
  if (!outcome.ok()) {
    SetStatus(outcome, status);
  } else if (TF_GetCode(status) != TF_OK) {
    TF_SetStatus(status, TF_OK, "");
  }
}

LazyCallables::LazyCallables(TF_Session* session, std::vector<std::string> feeds, std::vector<std::string> fetches,
                             std::vector<int> pools, std::string what)
    : session_(session),
      feeds_(std::move(feeds)),
      fetches_(std::move(fetches)),
      pools_(std::move(pools)),
      what_(std::move(what)),
      slots_(new Slot[pools_.size()]) {}

const CallableRunner* LazyCallables::Get(size_t slot) const {
  Slot& s = slots_[slot];
  std::call_once(s.once, [&] {
    const Status made = CallableRunner::Create(session_, feeds_, fetches_, pools_[slot], &s.runner);
    if (made.ok()) {
      made_.fetch_add(1, std::memory_order_release);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(error_mutex_);
      if (!error_.empty()) return;  // said once
      error_ = made.message();
    }
    refused_.fetch_add(1, std::memory_order_release);
    if (!what_.empty()) {
      Log(LogLevel::kWarning, what_ + " runs through TF_SessionRun, which is slower per request: " + made.message());
    }
  });
  return s.runner.get();
}

const char* LazyCallables::state() const {
  if (refused_.load(std::memory_order_acquire) > 0) return "session_run";
  return made_.load(std::memory_order_acquire) > 0 ? "callable" : "unmade";
}

std::string LazyCallables::error() const {
  std::lock_guard<std::mutex> lock(error_mutex_);
  return error_;
}

}  // namespace processor
