// VersionManager: which version serves now. Swaps are atomic; readers never block a swap and a swap
// never waits for readers: each request holds the version it started on until it ends.
#pragma once

#include <memory>
#include <string>

#include "model/servable.h"

namespace processor {

struct ServingVersion {
  std::shared_ptr<const Servable> servable;
  std::string model_info;  // serialized ServingModelInfo, written by the control plane
};

class VersionManager {
 public:
  // The version serving now, or null when none is ready.
  std::shared_ptr<const ServingVersion> Current() const { return std::atomic_load(&current_); }

  void Install(std::shared_ptr<const Servable> servable, std::string model_info) {
    std::atomic_store(&current_, std::shared_ptr<const ServingVersion>(
                                     new ServingVersion{std::move(servable), std::move(model_info)}));
  }

  // Replaces the model info of the serving version (counters change between versions).
  void SetModelInfo(std::string model_info) {
    std::shared_ptr<const ServingVersion> current = Current();
    if (current) Install(current->servable, std::move(model_info));
  }

  void Unload() { std::atomic_store(&current_, std::shared_ptr<const ServingVersion>()); }

 private:
  std::shared_ptr<const ServingVersion> current_;
};

}  // namespace processor
