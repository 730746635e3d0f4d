// Monolith hash-table dumps: TFRecord shards `<table>-<i>-of-<n>` of EntryDump records, read a block of
// entries at a time so that a table of any size takes bounded memory. The one reader of the format: the
// local store loads tables with it, and the Redis importer (Python, through _core) streams them with it.
//
// EntryDump (monolith/native_training/runtime/hash_table/embedding_hash_table.proto): `sfixed64 id = 1`,
// `repeated float num = 2` (proto2, unpacked; packed accepted as a proto3 writer would write it); the
// optimizer state and timestamps are skipped. Every record's masked CRC-32C (length and data) is checked,
// as TensorFlow's record reader does: a corrupt byte refuses the shard, never a row.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace processor {

class MonolithShardReader {
 public:
  static Status Open(const std::string& path, std::unique_ptr<MonolithShardReader>* reader);
  ~MonolithShardReader();
  MonolithShardReader(const MonolithShardReader&) = delete;
  MonolithShardReader& operator=(const MonolithShardReader&) = delete;

  // Appends up to `max_entries` entries to `ids` and `numbers` (row-major, dim() per entry); stops
  // early at the end of the shard (nothing appended: the end). Every entry must have the first's width.
  Status Read(size_t max_entries, std::vector<int64_t>* ids, std::vector<float>* numbers);
  int64_t dim() const { return dim_; }  // 0 until an entry was read
  const std::string& path() const { return path_; }

 private:
  MonolithShardReader(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}
  Status Corrupt(const std::string& what) const;

  std::string path_;
  std::FILE* file_;
  std::string record_;
  int64_t dim_ = 0;
  int64_t index_ = 0;   // of the next record
  uint64_t offset_ = 0;  // byte offset of the next record
};

// Parses one EntryDump record; appends its numbers. InvalidArgument says what is wrong.
Status ParseEntryDump(const std::string& record, int64_t* id, std::vector<float>* numbers);

}  // namespace processor
