// TieredTable: a local table in two tiers (ev_storage_type 12, DeepRec's DRAM + SSDHASH): the hot rows
// in DRAM (RowCache, within ev_storage_size's budget) in front of every row on disk (TierFile).
// A lookup copies the rows the cache holds, reads the others from the disk tier and offers them to the
// cache. A delta (WriteRows, while the servable keeps every lookup out) writes the disk tier and the
// rows the cache holds, so a request sees it wholly or not at all, as with the other local tables.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "feature_store/local_table.h"
#include "feature_store/row_cache.h"
#include "feature_store/tier_file.h"

namespace processor {

// A table's tiers: DRAM in front of `store` ("disk", or "redis" for Redis's hot-row cache).
struct TierCounters {
  const char* store = "disk";
  uint64_t dram_hits = 0;     // ids found in the DRAM tier
  uint64_t disk_hits = 0;     // ids read from the store behind it
  uint64_t absent = 0;        // ids neither holds (default rows)
  uint64_t evictions = 0;     // rows the DRAM tier let go for more frequent ones
  uint64_t rejections = 0;    // rows read from disk that the DRAM tier did not admit (TinyLFU)
  uint64_t dram_bytes = 0;    // the DRAM tier's allocation (its budget, rounded down to whole rows)
  uint64_t dram_rows = 0;     // rows it holds now
  uint64_t disk_bytes = 0;    // the disk tier's files, as allocated on disk (Redis: not reported)
};

// The tiers of a version's tables, for the metrics.
struct TierReport {
  std::vector<std::pair<std::string, TierCounters>> tables;
};

class TieredTable final : public LocalTable {
 public:
  TieredTable(std::string name, int64_t dim, std::unique_ptr<TierFile> file, uint64_t dram_bytes);

  bool keyed_by_any_id() const override { return file_->keyed(); }
  int64_t rows() const override { return file_->rows(); }
  Status Lookup(const int64_t* ids, size_t n, const float* default_row, float* out,
                size_t default_stride = 0) const override;
  Status WriteRows(const int64_t* ids, size_t n, const float* values) override;
  TierCounters counters() const;
  uint64_t cache_rows() const { return cache_.capacity_rows(); }

 private:
  std::unique_ptr<TierFile> file_;
  mutable RowCache cache_;
  mutable std::atomic<uint64_t> dram_hits_{0}, disk_hits_{0}, absent_{0};
};

}  // namespace processor
