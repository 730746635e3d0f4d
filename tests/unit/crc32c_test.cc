// common/crc32c.h: CRC-32C as TensorFlow's checkpoints and TFRecord files hold it (the CPU's crc32
// instruction where there is one, a table otherwise), checked against RFC 3720's test vectors.
#include "common/crc32c.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace processor {
namespace {

TEST(Crc32c, Rfc3720TestVectors) {
  std::vector<uint8_t> bytes(32, 0);
  EXPECT_EQ(Crc32c(bytes.data(), bytes.size()), 0x8A9136AAu);
  bytes.assign(32, 0xFF);
  EXPECT_EQ(Crc32c(bytes.data(), bytes.size()), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) bytes[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(Crc32c(bytes.data(), bytes.size()), 0x46DD794Eu);
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
}

TEST(Crc32c, ExtendingPieceByPieceEqualsTheWhole) {
  std::vector<uint8_t> bytes(1001);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 131 + 7);
  const uint32_t whole = Crc32c(bytes.data(), bytes.size());
  for (size_t cut : {0, 1, 7, 8, 9, 500, 1000, 1001}) {  // both sides of every word boundary
    EXPECT_EQ(Crc32cExtend(Crc32c(bytes.data(), cut), bytes.data() + cut, bytes.size() - cut), whole) << cut;
  }
}

}  // namespace
}  // namespace processor
