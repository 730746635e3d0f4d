// VersionManager: which version serves now. Requests hold the version they started on without a lock
// or a shared reference count (a hold is two atomic adds on the thread's own cache line); a swap
// publishes the new version at once and then waits for the requests still holding the old one, so the
// old version is released on the control plane's thread, never on a request's.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "common/grace_period.h"
#include "common/wire_format.h"
#include "model/servable.h"

namespace processor {

// The version number TF Serving's API reports for a ServingModelInfo, as the REST API reports it
// (processor/server/registry.py's served_version; tests/test_tf_serving_predict.py ties the two): the
// checkpoint step (field 4) when there is one, else the SavedModel's integer version (field 10), else 0.
inline int64_t ServedVersionNumber(const std::string& model_info) {
  wire::Reader r(model_info);
  uint32_t field, wire_type;
  int64_t step = -1, savedmodel_version = 0;
  while (r.NextField(&field, &wire_type)) {
    if (field == 4 && wire_type == wire::kVarint) step = static_cast<int64_t>(r.Varint());
    else if (field == 10 && wire_type == wire::kVarint) savedmodel_version = static_cast<int64_t>(r.Varint());
    else r.Skip(wire_type);
  }
  if (step >= 0) return step;
  return savedmodel_version > 0 ? savedmodel_version : 0;
}

struct ServingVersion {
  ServingVersion(std::shared_ptr<const Servable> servable, std::string model_info)
      : servable(std::move(servable)), model_info(std::move(model_info)), number(ServedVersionNumber(this->model_info)) {}

  std::shared_ptr<const Servable> servable;
  std::string model_info;  // serialized ServingModelInfo, written by the control plane
  int64_t number;          // ServedVersionNumber(model_info)
};

class VersionManager {
 public:
  // A request's hold on the version serving when the hold began: that version stays alive until the
  // hold ends. Holds never block, and are not to be kept while calling the manager's swaps.
  class Hold {
   public:
    explicit Hold(const VersionManager& manager)
        : manager_(manager),
          token_(manager.readers_.Enter()),
          version_(manager.current_.load(std::memory_order_seq_cst)) {}
    ~Hold() { manager_.readers_.Exit(token_); }
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;

    // The version, or null when none is ready.
    const ServingVersion* version() const { return version_; }

   private:
    const VersionManager& manager_;
    const GracePeriod::ReadToken token_;
    const ServingVersion* const version_;
  };

  // Each swap returns once no request holds the version it replaced, and releases that version.
  void Install(std::shared_ptr<const Servable> servable, std::string model_info) {
    std::lock_guard<std::mutex> lock(swap_mutex_);
    Replace(std::make_unique<const ServingVersion>(std::move(servable), std::move(model_info)));
  }

  // Replaces the model info of the serving version (counters change between versions).
  void SetModelInfo(std::string model_info) {
    std::lock_guard<std::mutex> lock(swap_mutex_);
    if (!serving_) return;
    Replace(std::make_unique<const ServingVersion>(serving_->servable, std::move(model_info)));
  }

  void Unload() {
    std::lock_guard<std::mutex> lock(swap_mutex_);
    Replace(nullptr);
  }

 private:
  void Replace(std::unique_ptr<const ServingVersion> next) {
    std::unique_ptr<const ServingVersion> previous = std::move(serving_);
    serving_ = std::move(next);
    current_.store(serving_.get(), std::memory_order_seq_cst);
    readers_.Synchronize("a version swap");  // no request can still read `previous`, which goes here
  }

  mutable GracePeriod readers_;
  std::atomic<const ServingVersion*> current_{nullptr};  // what requests read: serving_, published
  std::mutex swap_mutex_;                                 // one swap at a time; guards serving_
  std::unique_ptr<const ServingVersion> serving_;
};

}  // namespace processor
