#include "feature_store/local_table.h"

#include <cstring>
#include <limits>

namespace processor {

DenseTable::DenseTable(std::string name, TensorPtr rows)
    : LocalTable(std::move(name), TF_Dim(rows.get(), 1)),
      tensor_(std::move(rows)),
      data_(static_cast<float*>(TF_TensorData(tensor_.get()))),
      rows_(TF_Dim(tensor_.get(), 0)) {}

Status DenseTable::Lookup(const int64_t* ids, size_t n, const float* default_row, float* out,
                          size_t default_stride) const {
  const size_t row_bytes = sizeof(float) * dim();
  for (size_t i = 0; i < n; ++i) {
    const float* row =
        ids[i] >= 0 && ids[i] < rows_ ? data_ + ids[i] * dim() : MissingRow(ids[i], i, default_row, default_stride);
    std::memcpy(out + i * dim(), row, row_bytes);
  }
  return Status::Ok();
}

Status DenseTable::WriteRows(const int64_t* ids, size_t n, const float* values) {
  for (size_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= rows_) {
      return Status::InvalidArgument("row id " + std::to_string(ids[i]) + " is outside [0, " + std::to_string(rows_) + ")");
    }
  }
  for (size_t i = 0; i < n; ++i) std::memcpy(data_ + ids[i] * dim(), values + i * dim(), sizeof(float) * dim());
  return Status::Ok();
}

namespace {

// splitmix64's finalizer: hash ids (already random) and sequential ids alike spread over the slots.
inline uint64_t Mix(int64_t id) {
  uint64_t x = static_cast<uint64_t>(id);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

size_t HashedTable::SlotOf(int64_t id) const {
  const size_t mask = slot_ids_.size() - 1;
  size_t slot = Mix(id) & mask;
  while (slot_rows_[slot] != kEmpty && slot_ids_[slot] != id) slot = (slot + 1) & mask;
  return slot;
}

Status HashedTable::Lookup(const int64_t* ids, size_t n, const float* default_row, float* out,
                           size_t default_stride) const {
  const size_t row_bytes = sizeof(float) * dim();
  for (size_t i = 0; i < n; ++i) {
    const uint32_t found = slot_ids_.empty() ? kEmpty : slot_rows_[SlotOf(ids[i])];
    const float* row =
        found != kEmpty ? values_.data() + (found - 1) * dim() : MissingRow(ids[i], i, default_row, default_stride);
    std::memcpy(out + i * dim(), row, row_bytes);
  }
  return Status::Ok();
}

void HashedTable::Grow() {
  const size_t slots = slot_ids_.empty() ? 1024 : 2 * slot_ids_.size();
  slot_ids_.assign(slots, 0);
  slot_rows_.assign(slots, kEmpty);
  for (size_t row = 0; row < ids_.size(); ++row) {
    const size_t slot = SlotOf(ids_[row]);
    slot_ids_[slot] = ids_[row];
    slot_rows_[slot] = static_cast<uint32_t>(row + 1);
  }
}

Status HashedTable::WriteRows(const int64_t* ids, size_t n, const float* values) {
  if (ids_.size() + n >= std::numeric_limits<uint32_t>::max()) {
    return Status::InvalidArgument("embedding " + name() + ": more than 2^32 - 1 rows in one local table");
  }
  const size_t row_floats = static_cast<size_t>(dim());
  for (size_t i = 0; i < n; ++i) {
    if (2 * (ids_.size() + 1) > slot_ids_.size()) Grow();
    const size_t slot = SlotOf(ids[i]);
    if (slot_rows_[slot] == kEmpty) {
      slot_ids_[slot] = ids[i];
      slot_rows_[slot] = static_cast<uint32_t>(ids_.size() + 1);
      ids_.push_back(ids[i]);
      values_.insert(values_.end(), values + i * row_floats, values + (i + 1) * row_floats);
    } else {
      std::memcpy(values_.data() + (slot_rows_[slot] - 1) * row_floats, values + i * row_floats, sizeof(float) * row_floats);
    }
  }
  return Status::Ok();
}

}  // namespace processor
