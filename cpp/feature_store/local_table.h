// Tables held in this process's memory (feature_store_type "local"), built once per version instead of
// living in the session. Lookups run concurrently; WriteRows (a delta) runs while the servable's lock
// keeps every lookup out.
#pragma once

#include <vector>

#include "common/tf_handles.h"
#include "feature_store/embedding_table.h"

namespace processor {

class LocalTable : public EmbeddingTable {
 public:
  using EmbeddingTable::EmbeddingTable;
  // Whether any int64 is a row id (a hash table's), or only [0, rows()) (a checkpoint variable's rows).
  virtual bool keyed_by_any_id() const = 0;
  virtual int64_t rows() const = 0;
  // Writes the rows of a delta (n rows of dim() values).
  virtual Status WriteRows(const int64_t* ids, size_t n, const float* values) = 0;
};

// The rows of a checkpoint variable: row i has id i.
class DenseTable final : public LocalTable {
 public:
  // `rows`: a float tensor [rows, dim], owned from now on.
  DenseTable(std::string name, TensorPtr rows);

  bool keyed_by_any_id() const override { return false; }
  int64_t rows() const override { return rows_; }
  Status Lookup(const int64_t* ids, size_t n, const float* default_row, float* out,
                size_t default_stride = 0) const override;
  // Ids outside [0, rows()) are an error (the caller drops them first).
  Status WriteRows(const int64_t* ids, size_t n, const float* values) override;

 private:
  TensorPtr tensor_;
  float* data_;
  int64_t rows_;
};

// Rows keyed by arbitrary int64 ids (a Monolith hash-table dump): open addressing with linear probing
// over a power-of-two slot array at most half full, the rows in one contiguous array.
class HashedTable final : public LocalTable {
 public:
  HashedTable(std::string name, int64_t dim) : LocalTable(std::move(name), dim) {}

  bool keyed_by_any_id() const override { return true; }
  int64_t rows() const override { return static_cast<int64_t>(ids_.size()); }
  Status Lookup(const int64_t* ids, size_t n, const float* default_row, float* out,
                size_t default_stride = 0) const override;
  // Replaces the rows of ids it holds and adds the others (a later duplicate wins).
  Status WriteRows(const int64_t* ids, size_t n, const float* values) override;

 private:
  static constexpr uint32_t kEmpty = 0;  // slot values are row index + 1
  size_t SlotOf(int64_t id) const;
  void Grow();

  std::vector<int64_t> slot_ids_;
  std::vector<uint32_t> slot_rows_;
  std::vector<int64_t> ids_;    // by row
  std::vector<float> values_;   // [rows, dim]
};

}  // namespace processor
