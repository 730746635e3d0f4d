// EmbeddingTable: the rows of one embedding variable, served from outside the session (the feature
// store). The lookup op reads it while TensorFlow runs a request; the servable that created it owns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace processor {

// Starts the message of a lookup that failed because the store is out of reach. TensorFlow turns a
// kernel's UNAVAILABLE into INTERNAL, so the servable recognizes it by this text and answers 503.
inline constexpr char kStoreUnavailable[] = "feature store unavailable: ";

class EmbeddingTable {
 public:
  EmbeddingTable(std::string name, int64_t dim) : name_(std::move(name)), dim_(dim) {}
  virtual ~EmbeddingTable() = default;
  EmbeddingTable(const EmbeddingTable&) = delete;
  EmbeddingTable& operator=(const EmbeddingTable&) = delete;

  const std::string& name() const { return name_; }  // the variable's name in the graph
  int64_t dim() const { return dim_; }

  // Writes the rows of `ids` into `rows` ([n, dim], row-major); ids the table lacks get `default_row`
  // (dim values). Called concurrently by requests. An unreachable store is Unavailable.
  virtual Status Lookup(const int64_t* ids, size_t n, const float* default_row, float* rows) const = 0;

 private:
  std::string name_;
  int64_t dim_;
};

}  // namespace processor
