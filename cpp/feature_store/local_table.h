// LocalTable: an embedding table held in this process's memory (feature_store_type "local"), restored
// from the checkpoint once per version instead of living in the session.
#pragma once

#include "common/tf_handles.h"
#include "feature_store/embedding_table.h"

namespace processor {

class LocalTable : public EmbeddingTable {
 public:
  // `rows`: a float tensor [rows, dim], owned from now on.
  LocalTable(std::string name, TensorPtr rows);

  int64_t rows() const { return rows_; }
  Status Lookup(const int64_t* ids, size_t n, const float* default_row, float* out) const override;
  // Overwrites rows in place (a delta). The caller excludes concurrent lookups (the servable's lock).
  Status WriteRows(const int64_t* ids, size_t n, const float* values);

 private:
  TensorPtr tensor_;
  float* data_;
  int64_t rows_;
};

}  // namespace processor
