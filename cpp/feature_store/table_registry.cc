#include "feature_store/table_registry.h"

namespace processor {

TableRegistry& TableRegistry::Global() {
  static TableRegistry* registry = new TableRegistry();  // never destroyed: kernels may outlive exit handlers
  return *registry;
}

std::string TableRegistry::NewKey(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  return std::to_string(++next_) + ":" + name;
}

void TableRegistry::Register(const std::string& key, std::shared_ptr<const EmbeddingTable> table) {
  std::lock_guard<std::mutex> lock(mu_);
  tables_[key] = std::move(table);
}

void TableRegistry::Unregister(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  tables_.erase(key);
}

std::shared_ptr<const EmbeddingTable> TableRegistry::Find(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tables_.find(key);
  return it == tables_.end() ? nullptr : it->second;
}

}  // namespace processor
