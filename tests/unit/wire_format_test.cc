// common/wire_format.h: the reader every parser of the data plane stands on, against protobuf's rules.
#include "common/wire_format.h"

#include <gtest/gtest.h>

#include <string>

namespace processor::wire {
namespace {

std::string Varint(uint64_t value) {
  StringWriter writer;
  writer.Varint(1, value);
  return writer.str().substr(1);  // without the tag
}

TEST(WireReader, VarintsOfEveryLengthRoundTrip) {
  for (uint64_t value : {0ull, 1ull, 127ull, 128ull, 16383ull, 16384ull, 1ull << 35, ~0ull}) {
    const std::string bytes = Varint(value);
    EXPECT_EQ(bytes.size(), VarintSize(value)) << value;
    Reader reader(bytes);
    EXPECT_EQ(reader.Varint(), value);
    EXPECT_TRUE(reader.ok());
    EXPECT_EQ(reader.remaining(), 0u);
  }
}

TEST(WireReader, AVarintLongerThanTenBytesOrCutShortIsMalformed) {
  const std::string eleven_bytes = std::string(10, '\x80') + '\x01';
  Reader eleven(eleven_bytes);
  eleven.Varint();
  EXPECT_FALSE(eleven.ok());
  const std::string cut_bytes = std::string("\x80\x80", 2);
  Reader cut(cut_bytes);
  cut.Varint();
  EXPECT_FALSE(cut.ok());
}

TEST(WireReader, LengthDelimitedStaysWithinTheInput) {
  const std::string fits_bytes = std::string("\x03" "abc", 4);
  Reader fits(fits_bytes);
  EXPECT_EQ(fits.LengthDelimited(), "abc");
  EXPECT_TRUE(fits.ok());
  const std::string beyond_bytes = std::string("\x04" "abc", 4);
  Reader beyond(beyond_bytes);
  EXPECT_EQ(beyond.LengthDelimited(), "");
  EXPECT_FALSE(beyond.ok());
}

TEST(WireReader, FieldZeroAndTagsBeyond32BitsAreMalformed) {
  uint32_t field, wire_type;
  const std::string zero_bytes = std::string("\x00\x01", 2);
  Reader zero(zero_bytes);
  EXPECT_FALSE(zero.NextField(&field, &wire_type));
  EXPECT_FALSE(zero.ok());
  const std::string huge_bytes = Varint(uint64_t(1) << 40);
  Reader huge(huge_bytes);
  EXPECT_FALSE(huge.NextField(&field, &wire_type));
}

TEST(WireReader, GroupsAreSkippedToTheirEndAsProtobufSkipsThem) {
  // field 2: a group holding a varint and a nested group; then field 3 = 7.
  const std::string bytes = std::string("\x13" "\x08\x05" "\x23\x24" "\x14" "\x18\x07", 8);
  Reader reader(bytes);
  uint32_t field, wire_type;
  ASSERT_TRUE(reader.NextField(&field, &wire_type));
  EXPECT_EQ(field, 2u);
  EXPECT_EQ(wire_type, kStartGroup);
  reader.Skip(wire_type);
  ASSERT_TRUE(reader.NextField(&field, &wire_type));
  EXPECT_EQ(field, 3u);
  EXPECT_EQ(reader.Varint(), 7u);
  EXPECT_TRUE(reader.ok());
}

TEST(WireReader, AGroupEndingWithAnotherFieldOrNeverIsMalformed) {
  uint32_t field, wire_type;
  const std::string mismatched_bytes("\x13\x1c", 2);  // starts field 2, ends field 3
  Reader mismatched(mismatched_bytes);
  ASSERT_TRUE(mismatched.NextField(&field, &wire_type));
  mismatched.Skip(wire_type);
  EXPECT_FALSE(mismatched.ok());
  const std::string open_bytes = std::string("\x13\x08\x01", 3);
  Reader open(open_bytes);
  ASSERT_TRUE(open.NextField(&field, &wire_type));
  open.Skip(wire_type);
  EXPECT_FALSE(open.ok());
}

TEST(WireReader, GroupsNestDeeperThanProtobufsLimitAreMalformed) {
  auto nested = [](int depth) {
    std::string bytes;
    for (int i = 0; i < depth; ++i) bytes += '\x13';
    for (int i = 0; i < depth; ++i) bytes += '\x14';
    return bytes;
  };
  for (int depth : {kMaxGroupDepth, kMaxGroupDepth + 1}) {
    const std::string bytes = nested(depth);
    Reader reader(bytes);
    uint32_t field, wire_type;
    ASSERT_TRUE(reader.NextField(&field, &wire_type));
    reader.Skip(wire_type);
    EXPECT_EQ(reader.ok(), depth <= kMaxGroupDepth) << depth;
  }
}

TEST(WireReader, WireTypesSixAndSevenAreMalformed) {
  for (char tag : {'\x0e', '\x0f'}) {
    const std::string reader_bytes = std::string(1, tag) + '\x00';
    Reader reader(reader_bytes);
    uint32_t field, wire_type;
    ASSERT_TRUE(reader.NextField(&field, &wire_type));
    reader.Skip(wire_type);
    EXPECT_FALSE(reader.ok());
  }
}

TEST(WireWriter, WritesWhatTheReaderReads) {
  std::string buffer(32, '\0');
  Writer writer(reinterpret_cast<uint8_t*>(buffer.data()));
  writer.Bytes(4, "hello");
  writer.Varint(Tag(5, kVarint));
  writer.Varint(300);
  buffer.resize(writer.position() - reinterpret_cast<uint8_t*>(buffer.data()));
  EXPECT_EQ(buffer.size(), LengthDelimitedSize(5) + 1 + VarintSize(300));
  Reader reader(buffer);
  uint32_t field, wire_type;
  ASSERT_TRUE(reader.NextField(&field, &wire_type));
  EXPECT_EQ(reader.LengthDelimited(), "hello");
  ASSERT_TRUE(reader.NextField(&field, &wire_type));
  EXPECT_EQ(field, 5u);
  EXPECT_EQ(reader.Varint(), 300u);
}

}  // namespace
}  // namespace processor::wire
