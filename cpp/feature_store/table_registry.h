// TableRegistry: how a lookup op, built by TensorFlow from a graph attribute, finds its table. A
// servable registers its tables under process-unique keys before its session exists, and removes
// them when it is destroyed; kernels hold the table itself (shared), so the order does not matter.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "feature_store/embedding_table.h"

namespace processor {

class TableRegistry {
 public:
  static TableRegistry& Global();

  // A new key for a table of this name (what goes in the lookup op's `table` attribute); the table is
  // registered under it once it exists, before the session's first lookup.
  std::string NewKey(const std::string& name);
  void Register(const std::string& key, std::shared_ptr<const EmbeddingTable> table);
  void Unregister(const std::string& key);
  std::shared_ptr<const EmbeddingTable> Find(const std::string& key) const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<const EmbeddingTable>> tables_;
  uint64_t next_ = 0;
};

}  // namespace processor
