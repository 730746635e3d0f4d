// The feature store's small parts: CRC-32C, the Monolith dump reader, the hash table of local tables.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "common/crc32c.h"
#include "feature_store/local_table.h"
#include "feature_store/monolith_dump.h"

namespace processor {
namespace {

TEST(Crc32c, KnownValuesAndExtension) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);  // the check value of CRC-32C
  const std::string zeros(32, '\0');
  EXPECT_EQ(Crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720, B.4
  EXPECT_EQ(Crc32cExtend(Crc32c("12345", 5), "6789", 4), 0xE3069283u);
  EXPECT_EQ(Crc32c("", 0), 0u);
}

// A TFRecord file as TensorFlow writes it (tensorflow/core/lib/io/record_writer.cc): length, masked
// CRC of the length, data, masked CRC of the data.
std::string Record(const std::string& data) {
  std::string out(8, '\0');
  const uint64_t length = data.size();
  std::memcpy(out.data(), &length, 8);  // little-endian hosts
  const uint32_t length_crc = MaskedCrc32c(out.data(), 8);
  out.append(reinterpret_cast<const char*>(&length_crc), 4);
  out += data;
  const uint32_t data_crc = MaskedCrc32c(data.data(), data.size());
  out.append(reinterpret_cast<const char*>(&data_crc), 4);
  return out;
}

// EntryDump (monolith/.../embedding_hash_table.proto): sfixed64 id = 1, repeated float num = 2.
std::string Entry(int64_t id, const std::vector<float>& numbers, bool packed = false) {
  std::string out = "\x09";
  out.append(reinterpret_cast<const char*>(&id), 8);
  if (packed) {
    out += '\x12';
    out += static_cast<char>(4 * numbers.size());
    out.append(reinterpret_cast<const char*>(numbers.data()), 4 * numbers.size());
  } else {
    for (float value : numbers) {
      out += '\x15';
      out.append(reinterpret_cast<const char*>(&value), 4);
    }
  }
  return out + "\x20\x05";  // an int field it skips (last_update_ts_sec)
}

class MonolithShard : public ::testing::Test {
 protected:
  std::string Write(const std::string& bytes) {
    std::FILE* file = std::fopen(path_.c_str(), "wb");
    std::fwrite(bytes.data(), 1, bytes.size(), file);
    std::fclose(file);
    return path_;
  }
  void TearDown() override { std::remove(path_.c_str()); }
  std::string path_ = ::testing::TempDir() + "/shard-00000-of-00001";
};

TEST_F(MonolithShard, ReadsPackedAndUnpackedEntriesInBlocks) {
  std::unique_ptr<MonolithShardReader> reader;
  ASSERT_TRUE(MonolithShardReader::Open(Write(Record(Entry(-7, {1, 2})) + Record(Entry(9, {3, 4}, true)) +
                                              Record(Entry(std::numeric_limits<int64_t>::min(), {5, 6}))),
                                        &reader).ok());
  std::vector<int64_t> ids;
  std::vector<float> numbers;
  ASSERT_TRUE(reader->Read(2, &ids, &numbers).ok());
  EXPECT_EQ(ids, (std::vector<int64_t>{-7, 9}));
  EXPECT_EQ(numbers, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(reader->dim(), 2);
  ASSERT_TRUE(reader->Read(2, &ids, &numbers).ok());
  EXPECT_EQ(ids.back(), std::numeric_limits<int64_t>::min());
  const size_t before = ids.size();
  ASSERT_TRUE(reader->Read(2, &ids, &numbers).ok());
  EXPECT_EQ(ids.size(), before);  // the end
}

TEST_F(MonolithShard, EveryCorruptionIsNamedWithItsRecordAndByte) {
  const std::string good = Record(Entry(1, {1, 2}));
  std::string flipped = good + good;
  flipped[good.size() + 14] ^= 1;  // a byte of the second record's data
  const struct {
    std::string bytes;
    std::string message;
  } cases[] = {
      {flipped, "record 1 at byte " + std::to_string(good.size()) + ": data checksum mismatch"},
      {good + good.substr(0, 5), "record 1 at byte " + std::to_string(good.size()) + ": truncated header"},
      {good.substr(0, good.size() - 2), "record 0 at byte 0: truncated"},
      {Record(std::string("\x15\x00\x00\x80\x3f", 5)), "an EntryDump record has no id"},
      {Record(Entry(1, {1, 2}) + "\x0f"), "not an EntryDump record"},
      {good + Record(Entry(2, {1, 2, 3})), "entry 2 has 3 numbers, the shard's first 2"},
      {Record(Entry(3, {})), "entry 3 has no numbers"},
  };
  for (const auto& c : cases) {
    std::unique_ptr<MonolithShardReader> reader;
    ASSERT_TRUE(MonolithShardReader::Open(Write(c.bytes), &reader).ok());
    std::vector<int64_t> ids;
    std::vector<float> numbers;
    const Status status = reader->Read(10, &ids, &numbers);
    EXPECT_NE(status.message().find(c.message), std::string::npos) << status.message();
  }
  std::unique_ptr<MonolithShardReader> missing;
  EXPECT_FALSE(MonolithShardReader::Open(path_ + ".nowhere", &missing).ok());
}

TEST(HashedTable, RowsByAnyIdThroughGrowthAndOverwrites) {
  HashedTable table("t", 2);
  const float default_row[2] = {-1, -1};
  std::vector<int64_t> ids;
  std::vector<float> values;
  for (int64_t i = 0; i < 5000; ++i) {
    ids.push_back(i * 0x9E3779B97F4A7C15ll);  // hash-like ids, negative ones among them
    values.push_back(float(i));
    values.push_back(float(-i));
  }
  ids.push_back(std::numeric_limits<int64_t>::min());
  values.insert(values.end(), {7, 7});
  ASSERT_TRUE(table.WriteRows(ids.data(), ids.size(), values.data()).ok());
  EXPECT_EQ(table.rows(), 5001);
  const int64_t overwrite[] = {ids[42]};
  const float row[] = {0.5f, 0.25f};
  ASSERT_TRUE(table.WriteRows(overwrite, 1, row).ok());
  EXPECT_EQ(table.rows(), 5001);
  const int64_t lookup[] = {ids[0], ids[42], ids[4999], std::numeric_limits<int64_t>::min(), 12345};
  float out[10];
  ASSERT_TRUE(table.Lookup(lookup, 5, default_row, out).ok());
  EXPECT_EQ(std::vector<float>(out, out + 10), (std::vector<float>{0, 0, 0.5f, 0.25f, 4999, -4999, 7, 7, -1, -1}));
}

TEST(HashedTable, AnEmptyTableReadsTheDefaultRow) {
  HashedTable table("t", 1);
  const int64_t id = 3;
  const float default_row = 9;
  float out = 0;
  ASSERT_TRUE(table.Lookup(&id, 1, &default_row, &out).ok());
  EXPECT_EQ(out, 9);
}

TEST(HashedTable, DefaultRowsAreReadByIdModTheirCountAsDeepRecsEmbeddingVariablesDo) {
  HashedTable table("ev", 2);
  const int64_t held = 10;
  const float held_row[] = {1, 1};
  ASSERT_TRUE(table.WriteRows(&held, 1, held_row).ok());
  table.SetDefaultRows({0, 0, 100, 101, 200, 201});  // three default rows
  const int64_t ids[] = {10, 4, 5, -1, std::numeric_limits<int64_t>::min()};
  const float unused_default[] = {-9, -9};
  float out[10];
  ASSERT_TRUE(table.Lookup(ids, 5, unused_default, out).ok());
  // 4 % 3 = 1, 5 % 3 = 2, -1 mod 3 = 2, INT64_MIN mod 3 = 1 (mod taken non-negative)
  EXPECT_EQ(std::vector<float>(out, out + 10), (std::vector<float>{1, 1, 100, 101, 200, 201, 200, 201, 100, 101}));
}

}  // namespace
}  // namespace processor
