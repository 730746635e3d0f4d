// CRC-32C (Castagnoli), and TFRecord's masked form of it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace processor {

// The CRC of bytes that follow bytes whose CRC is `crc` (0 for none): CRCs of large data, a block at a time.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size);
inline uint32_t Crc32c(const void* data, size_t size) { return Crc32cExtend(0, data, size); }

// What TFRecord files store: the CRC rotated and offset, so that CRCs of CRCs stay useful.
inline uint32_t MaskedCrc32c(const void* data, size_t size) {
  const uint32_t crc = Crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

}  // namespace processor
