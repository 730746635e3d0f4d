// EmbeddingTable: the rows of one embedding variable, served from outside the session (the feature
// store). The lookup op reads it while TensorFlow runs a request; the servable that created it owns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

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
  // (dim values), or DefaultRowOf(id) when default rows are set. With `default_stride` (dim), id i
  // lacking gets default_row + i * default_stride instead: per-id defaults (DeepRec's
  // is_use_default_value_tensor). Called concurrently by requests. An unreachable store is Unavailable.
  virtual Status Lookup(const int64_t* ids, size_t n, const float* default_row, float* rows,
                        size_t default_stride = 0) const = 0;

  // Rows ([k, dim]) ids the table lacks read instead of the lookup's default row: row (id mod k), as
  // DeepRec's EmbeddingVariables read their initializer's values (kv_variable_ops.cc; mod taken
  // non-negative, where DeepRec's C++ % would read before the table for a negative id). Set before the
  // table serves.
  void SetDefaultRows(std::vector<float> rows) { default_rows_ = std::move(rows); }

 protected:
  // The row id `ids[i]` reads when the table lacks it (see Lookup).
  const float* MissingRow(int64_t id, size_t i, const float* default_row, size_t default_stride) const {
    return default_stride ? default_row + i * default_stride : DefaultRowOf(id, default_row);
  }
  const float* DefaultRowOf(int64_t id, const float* default_row) const {
    if (default_rows_.empty()) return default_row;
    const int64_t k = static_cast<int64_t>(default_rows_.size()) / dim_;
    return default_rows_.data() + ((id % k) + k) % k * dim_;
  }

 private:
  std::string name_;
  int64_t dim_;
  std::vector<float> default_rows_;
};

}  // namespace processor
