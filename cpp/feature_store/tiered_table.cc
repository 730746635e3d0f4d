#include "feature_store/tiered_table.h"

#include <cstring>
#include <vector>

namespace processor {

TieredTable::TieredTable(std::string name, int64_t dim, std::unique_ptr<TierFile> file, uint64_t dram_bytes)
    : LocalTable(std::move(name), dim), file_(std::move(file)), cache_(dim, dram_bytes) {}

Status TieredTable::Lookup(const int64_t* ids, size_t n, const float* default_row, float* out,
                           size_t default_stride) const {
  thread_local std::vector<uint32_t> missing, read;
  missing.clear();
  read.clear();
  const uint64_t generation = cache_.generation();
  cache_.Find(ids, n, out, &missing);
  const size_t row_bytes = sizeof(float) * dim();
  for (uint32_t i : missing) {
    const float* row = file_->Find(ids[i]);
    if (row != nullptr) read.push_back(i);
    std::memcpy(out + i * dim(), row != nullptr ? row : MissingRow(ids[i], i, default_row, default_stride), row_bytes);
  }
  cache_.Admit(ids, read.data(), read.size(), out, generation);
  dram_hits_.fetch_add(n - missing.size(), std::memory_order_relaxed);
  disk_hits_.fetch_add(read.size(), std::memory_order_relaxed);
  absent_.fetch_add(missing.size() - read.size(), std::memory_order_relaxed);
  return Status::Ok();
}

Status TieredTable::WriteRows(const int64_t* ids, size_t n, const float* values) {
  PROCESSOR_RETURN_IF_ERROR(file_->Write(ids, n, values));
  cache_.Update(ids, n, values);
  return Status::Ok();
}

TierCounters TieredTable::counters() const {
  TierCounters c;
  c.dram_hits = dram_hits_.load(std::memory_order_relaxed);
  c.disk_hits = disk_hits_.load(std::memory_order_relaxed);
  c.absent = absent_.load(std::memory_order_relaxed);
  c.evictions = cache_.evictions();
  c.rejections = cache_.rejections();
  c.dram_bytes = cache_.bytes();
  c.dram_rows = cache_.held_rows();
  c.disk_bytes = file_->disk_bytes();
  return c;
}

}  // namespace processor
