// TierFile: the disk tier of a table (ev_storage_type 12, DRAM + SSD): its rows in a file mapped into
// the process, so that what is read sits in the kernel's page cache (reclaimable), not in the heap.
//
// The control plane writes the files (feature_store/tier_files.py; the format is TierTable's in
// protos/control.proto): <path>.rows holds the rows, [rows, dim] float32 little-endian; a table keyed
// by id (an EmbeddingVariable, a Monolith dump) also has <path>.ids, [rows] int64 little-endian, and
// its index is an open-addressing hash of (id, row) in an unnamed file beside them. Open() maps them
// and removes their names: the files live exactly as long as this object (the version that serves
// them), and a crash at any point leaves nothing a restart could serve.
//
// Chosen by measurement over LMDB and RocksDB (benchmarks/native/disk_engines.cc, docs/feature_store.md):
// with the page cache warm, 512 rows read 13x faster than from LMDB's B-tree and 65x than RocksDB's
// MultiGet (6x and 32x through the hash index of ids); cold, each costs the disk's reads as theirs do.
//
// Find runs concurrently; Write (a delta) runs while the servable keeps every lookup out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"

namespace processor {

class TierFile {
 public:
  static Status Open(const std::string& path, int64_t dim, bool keyed, int64_t rows, std::unique_ptr<TierFile>* out);
  ~TierFile();
  TierFile(const TierFile&) = delete;
  TierFile& operator=(const TierFile&) = delete;

  // The row of `id`, or nullptr when the table lacks it.
  const float* Find(int64_t id) const {
    if (!keyed_) return id >= 0 && id < rows_ ? rows_map_ + id * dim_ : nullptr;
    const uint64_t row = RowOf(id);
    return row ? rows_map_ + (row - 1) * dim_ : nullptr;
  }
  // Writes a delta's rows; a keyed table adds ids it lacks (a later duplicate wins), a table of rows
  // [0, rows) refuses ids outside them (the caller drops those first).
  Status Write(const int64_t* ids, size_t n, const float* rows);

  bool keyed() const { return keyed_; }
  bool populated() const { return populate_; }  // mapped whole at load (the table fits in the page cache)
  int64_t rows() const { return rows_; }
  uint64_t disk_bytes() const;  // rows and index, as allocated on disk

 private:
  struct Slot {
    int64_t id;
    uint64_t row;  // row index + 1; 0: empty
  };
  TierFile(int64_t dim, bool keyed) : dim_(dim), keyed_(keyed) {}
  static uint64_t Mix(int64_t id);
  uint64_t RowOf(int64_t id) const {
    const uint64_t mask = slots_ - 1;
    for (uint64_t s = Mix(id) & mask;; s = (s + 1) & mask) {
      if (index_[s].row == 0) return 0;
      if (index_[s].id == id) return index_[s].row;
    }
  }
  Status BuildIndex(const std::string& ids_path, uint64_t slots);
  Status GrowRows(int64_t rows);
  void Insert(int64_t id, uint64_t row);

  int64_t dim_;
  bool keyed_;
  bool populate_ = false;
  int64_t rows_ = 0;            // rows in use
  int64_t rows_capacity_ = 0;   // rows the file holds
  int rows_fd_ = -1;
  float* rows_map_ = nullptr;
  std::string directory_;       // where the index's unnamed file goes
  int index_fd_ = -1;
  Slot* index_ = nullptr;
  uint64_t slots_ = 0;          // a power of two, at most half full
};

}  // namespace processor
