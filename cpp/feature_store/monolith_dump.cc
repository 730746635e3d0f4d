#include "feature_store/monolith_dump.h"

#include <cerrno>
#include <cstring>

#include "common/quote.h"
#include "common/tfrecord.h"
#include "common/wire_format.h"

namespace processor {
Status ParseEntryDump(const std::string& record, int64_t* id, std::vector<float>* numbers) {
  wire::Reader reader(record);
  bool has_id = false;
  const size_t first = numbers->size();
  uint32_t field, wire_type;
  while (reader.NextField(&field, &wire_type)) {
    if (field == 1 && wire_type == wire::kFixed64) {
      const std::string_view bytes = reader.Fixed(8);
      if (!reader.ok()) break;
      *id = static_cast<int64_t>(tfrecord::LoadLittleEndian(reinterpret_cast<const unsigned char*>(bytes.data()), 8));
      has_id = true;
    } else if (field == 2 && wire_type == wire::kFixed32) {
      const std::string_view bytes = reader.Fixed(4);
      if (!reader.ok()) break;
      float value;
      std::memcpy(&value, bytes.data(), 4);
      numbers->push_back(value);
    } else if (field == 2 && wire_type == wire::kLengthDelimited) {
      const std::string_view bytes = reader.LengthDelimited();
      if (!reader.ok()) break;
      if (bytes.size() % 4) return Status::InvalidArgument("not an EntryDump record (its num field is not float32s)");
      const size_t at = numbers->size();
      numbers->resize(at + bytes.size() / 4);
      std::memcpy(numbers->data() + at, bytes.data(), bytes.size());
    } else {
      reader.Skip(wire_type);
    }
  }
  if (!reader.ok()) {
    numbers->resize(first);
    return Status::InvalidArgument("not an EntryDump record (malformed protobuf)");
  }
  if (!has_id) {
    numbers->resize(first);
    return Status::InvalidArgument("an EntryDump record has no id");
  }
  return Status::Ok();
}

Status MonolithShardReader::Open(const std::string& path, std::unique_ptr<MonolithShardReader>* reader) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) return Status::InvalidArgument("cannot read Monolith shard " + Quote(path) + ": " + std::strerror(errno));
  reader->reset(new MonolithShardReader(path, file));
  return Status::Ok();
}

MonolithShardReader::~MonolithShardReader() { std::fclose(file_); }

Status MonolithShardReader::Corrupt(const std::string& what) const {
  return Status::InvalidArgument("Monolith shard " + Quote(path_) + ": record " + std::to_string(index_) +
                                 " at byte " + std::to_string(offset_) + ": " + what);
}

Status MonolithShardReader::Read(size_t max_entries, std::vector<int64_t>* ids, std::vector<float>* numbers) {
  for (size_t n = 0; n < max_entries; ++n) {
    unsigned char header[tfrecord::kHeaderBytes];
    const size_t got = std::fread(header, 1, sizeof(header), file_);
    if (got == 0 && std::feof(file_)) return Status::Ok();
    if (got < sizeof(header)) {
      return std::ferror(file_) ? Corrupt(std::string("cannot read: ") + std::strerror(errno))
                                : Corrupt("truncated header");
    }
    const uint64_t length = tfrecord::LoadLittleEndian(header, 8);
    if (!tfrecord::HeaderIntact(header)) return Corrupt("length checksum mismatch");
    if (length > (uint64_t(1) << 30)) return Corrupt("a record of " + std::to_string(length) + " bytes");
    record_.resize(length);
    unsigned char footer[tfrecord::kFooterBytes];
    if (std::fread(record_.data(), 1, length, file_) != length ||
        std::fread(footer, 1, sizeof footer, file_) != sizeof footer) {
      return Corrupt("truncated (" + std::to_string(length) + " bytes announced)");
    }
    if (!tfrecord::DataIntact(record_.data(), length, footer)) return Corrupt("data checksum mismatch");
    int64_t id = 0;
    const size_t before = numbers->size();
    Status parsed = ParseEntryDump(record_, &id, numbers);
    if (!parsed.ok()) return Corrupt(parsed.message());
    const int64_t width = static_cast<int64_t>(numbers->size() - before);
    if (width == 0) return Corrupt("entry " + std::to_string(id) + " has no numbers");
    if (dim_ == 0) dim_ = width;
    if (width != dim_) {
      numbers->resize(before);
      return Corrupt("entry " + std::to_string(id) + " has " + std::to_string(width) + " numbers, the shard's first " +
                     std::to_string(dim_));
    }
    ids->push_back(id);
    ++index_;
    offset_ += tfrecord::kHeaderBytes + length + tfrecord::kFooterBytes;
  }
  return Status::Ok();
}

}  // namespace processor
