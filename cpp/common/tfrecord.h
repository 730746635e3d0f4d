// TFRecord framing (tensorflow/core/lib/io/record_writer.cc): uint64 length, the masked CRC-32C of those
// eight bytes, the data, the masked CRC-32C of the data; little-endian. The request log writes it and
// the Monolith dump reader reads it (Python's copy, processor/formats/tfrecord.py, is tied to these by
// the tests that read each other's files).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/crc32c.h"

namespace processor::tfrecord {

constexpr size_t kHeaderBytes = 12;
constexpr size_t kFooterBytes = 4;

inline void StoreLittleEndian(uint64_t value, int bytes, unsigned char* out) {
  for (int i = 0; i < bytes; ++i) out[i] = static_cast<unsigned char>(value >> (8 * i));
}

inline uint64_t LoadLittleEndian(const unsigned char* in, int bytes) {
  uint64_t value = 0;
  for (int i = bytes - 1; i >= 0; --i) value = (value << 8) | in[i];
  return value;
}

inline void EncodeHeader(uint64_t length, unsigned char header[kHeaderBytes]) {
  StoreLittleEndian(length, 8, header);
  StoreLittleEndian(MaskedCrc32c(header, 8), 4, header + 8);
}

inline void EncodeFooter(const void* data, size_t size, unsigned char footer[kFooterBytes]) {
  StoreLittleEndian(MaskedCrc32c(data, size), 4, footer);
}

inline bool HeaderIntact(const unsigned char header[kHeaderBytes]) {
  return LoadLittleEndian(header + 8, 4) == MaskedCrc32c(header, 8);
}

inline bool DataIntact(const void* data, size_t size, const unsigned char footer[kFooterBytes]) {
  return LoadLittleEndian(footer, 4) == MaskedCrc32c(data, size);
}

}  // namespace processor::tfrecord
