#include "feature_store/local_table.h"

#include <cstring>

namespace processor {

LocalTable::LocalTable(std::string name, TensorPtr rows)
    : EmbeddingTable(std::move(name), TF_Dim(rows.get(), 1)),
      tensor_(std::move(rows)),
      data_(static_cast<float*>(TF_TensorData(tensor_.get()))),
      rows_(TF_Dim(tensor_.get(), 0)) {}

Status LocalTable::Lookup(const int64_t* ids, size_t n, const float* default_row, float* out) const {
  const size_t row_bytes = sizeof(float) * dim();
  for (size_t i = 0; i < n; ++i) {
    const float* row = ids[i] >= 0 && ids[i] < rows_ ? data_ + ids[i] * dim() : default_row;
    std::memcpy(out + i * dim(), row, row_bytes);
  }
  return Status::Ok();
}

Status LocalTable::WriteRows(const int64_t* ids, size_t n, const float* values) {
  for (size_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= rows_) {
      return Status::InvalidArgument("row id " + std::to_string(ids[i]) + " is outside [0, " + std::to_string(rows_) + ")");
    }
  }
  for (size_t i = 0; i < n; ++i) std::memcpy(data_ + ids[i] * dim(), values + i * dim(), sizeof(float) * dim());
  return Status::Ok();
}

}  // namespace processor
