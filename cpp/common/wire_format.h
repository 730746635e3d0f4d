// Protocol-buffer wire format, read and written by hand.
//
// Why not libprotobuf: TF's wheel carries a private protobuf whose symbols clash with any second copy
// (Debian's segfaults at dlopen), and generated code would tie the build to TF's exact protoc version.
// The messages we speak are small and frozen, so a reader over a byte span is the robust choice.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace processor::wire {

enum WireType : uint32_t {
  kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kStartGroup = 3, kEndGroup = 4, kFixed32 = 5
};

// How deep groups may nest in what is skipped: protobuf's default recursion limit.
constexpr int kMaxGroupDepth = 100;

// Reads fields from a span. Any malformation latches ok() to false; reads after that return zeros.
class Reader {
 public:
  Reader(const void* data, size_t size)
      : pos_(static_cast<const uint8_t*>(data)), end_(static_cast<const uint8_t*>(data) + size) {}
  explicit Reader(std::string_view bytes) : Reader(bytes.data(), bytes.size()) {}

  bool ok() const { return ok_; }
  size_t remaining() const { return size_t(end_ - pos_); }

  // For a caller that scans bytes this reader has already checked: where it stands, where its input
  // ends, and how to move it past what the caller consumed (`to` within [position(), end()]).
  const uint8_t* position() const { return pos_; }
  const uint8_t* end() const { return end_; }
  void SkipTo(const uint8_t* to) { pos_ = to; }
  // For such a caller that found the input malformed: latches the error.
  void MarkMalformed() { Fail(); }

  // Advances to the next field; false at the end of input or on error.
  bool NextField(uint32_t* field, uint32_t* wire_type) {
    if (pos_ >= end_ || !ok_) return false;
    uint64_t tag = Varint();
    *field = static_cast<uint32_t>(tag >> 3);
    *wire_type = static_cast<uint32_t>(tag & 7);
    if (*field == 0 || tag > 0xFFFFFFFFu) ok_ = false;
    last_field_ = *field;
    return ok_;
  }

  // The one-byte case (tags, lengths, small values) inlined at every call, the rest behind a call: the
  // parsers read a varint per field, and the whole decoder inlined everywhere would crowd out other
  // inlining.
  __attribute__((always_inline)) uint64_t Varint() {
    if (pos_ < end_ && *pos_ < 0x80) return *pos_++;
    return LongerVarint();
  }

  // Always inlined: the parsers call it for every field, and it is a few instructions once inlined.
  __attribute__((always_inline)) std::string_view LengthDelimited() {
    uint64_t size = Varint();
    if (!ok_ || size > uint64_t(end_ - pos_)) {
      Fail();
      return {};
    }
    std::string_view bytes(reinterpret_cast<const char*>(pos_), size);
    pos_ += size;
    return bytes;
  }

  // The raw bytes of a fixed-width value (4 or 8), for callers that copy them straight into tensors.
  std::string_view Fixed(size_t width) {
    if (size_t(end_ - pos_) < width) {
      Fail();
      return {};
    }
    std::string_view bytes(reinterpret_cast<const char*>(pos_), width);
    pos_ += width;
    return bytes;
  }

  // The raw bytes of one varint, undecoded.
  std::string_view RawVarint() {
    const uint8_t* start = pos_;
    Varint();
    return ok_ ? std::string_view(reinterpret_cast<const char*>(start), pos_ - start) : std::string_view();
  }

  // Skips the value of the field NextField() just returned, as protobuf skips an unknown field: a group
  // (proto2's, which proto3 parsers skip too) up to its matching end; an end-group tag outside one, or
  // wire types 6 and 7, are malformed.
  void Skip(uint32_t wire_type) { Skip(wire_type, 0); }

 private:
  void Skip(uint32_t wire_type, int depth) {
    switch (wire_type) {
      case kVarint: Varint(); break;
      case kFixed64: Fixed(8); break;
      case kLengthDelimited: LengthDelimited(); break;
      case kFixed32: Fixed(4); break;
      case kStartGroup: SkipGroup(last_field_, depth + 1); break;
      default: Fail();
    }
  }

  void SkipGroup(uint32_t group_field, int depth) {
    if (depth > kMaxGroupDepth) {
      Fail();
      return;
    }
    uint32_t field, wire_type;
    while (NextField(&field, &wire_type)) {
      if (wire_type == kEndGroup) {
        if (field != group_field) Fail();
        return;
      }
      Skip(wire_type, depth);
    }
    Fail();  // the input ended inside the group
  }

  uint64_t LongerVarint() {
    if (end_ - pos_ >= 2 && pos_[1] < 0x80) {  // ids below 16384: two
      const uint64_t value = (pos_[0] & 0x7f) | (uint64_t(pos_[1]) << 7);
      pos_ += 2;
      return value;
    }
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= end_) return Fail();
      uint8_t byte = *pos_++;
      value |= uint64_t(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return value;
    }
    return Fail();  // more than 10 bytes
  }

  uint64_t Fail() {
    ok_ = false;
    pos_ = end_;
    return 0;
  }

  const uint8_t* pos_;
  const uint8_t* end_;
  bool ok_ = true;
  uint32_t last_field_ = 0;
};

// Calls visit(reader, wire_type) at every occurrence of `field` in `pieces` (the bytes of one message,
// in several pieces when protobuf's merge semantics join repeated occurrences, already validated) that
// protobuf reads as that field (`reads_as(field, wire_type)`); visit consumes the value. The codecs'
// ArrayProto and TensorProto value readers both walk their pieces with it.
template <typename Pieces, typename ReadsAs, typename Visit>
void ForEachOccurrence(const Pieces& pieces, uint32_t field, ReadsAs reads_as, Visit&& visit) {
  for (std::string_view piece : pieces) {
    Reader r(piece);
    uint32_t f, wire_type;
    while (r.NextField(&f, &wire_type)) {
      if (f == field && reads_as(field, wire_type)) visit(r, wire_type);
      else r.Skip(wire_type);
    }
  }
}

// Without a loop (protobuf's formula): the encoder sizes every packed value before writing it, and a
// hashed id would take ten iterations.
inline size_t VarintSize(uint64_t value) {
  if (value < 0x80) return 1;  // dims, tags and most lengths
  const int bits = 64 - __builtin_clzll(value);  // significant bits (value is not 0)
  return static_cast<size_t>((bits * 9 + 64) / 64);  // ceil(bits / 7) for bits in 1..64
}

inline uint32_t Tag(uint32_t field, WireType wire_type) { return (field << 3) | wire_type; }

// The one varint encoder: writes `value` at `out` (up to 10 bytes); returns where it stopped.
inline uint8_t* EncodeVarint(uint64_t value, uint8_t* out) {
  while (value >= 0x80) {
    *out++ = uint8_t(value | 0x80);
    value >>= 7;
  }
  *out++ = uint8_t(value);
  return out;
}

inline void AppendVarint(std::string* out, uint64_t value) {
  uint8_t bytes[10];
  out->append(reinterpret_cast<const char*>(bytes), EncodeVarint(value, bytes) - bytes);
}

// Size of a length-delimited field with a one-byte tag.
inline size_t LengthDelimitedSize(size_t payload) { return 1 + VarintSize(payload) + payload; }

// Writes into a buffer the caller sized exactly beforehand (two-pass encoding: no reallocation, no
// intermediate copy of tensor payloads).
class Writer {
 public:
  explicit Writer(uint8_t* out) : pos_(out) {}
  uint8_t* position() const { return pos_; }

  void Varint(uint64_t value) { pos_ = EncodeVarint(value, pos_); }
  void Raw(const void* data, size_t size) {
    if (size) std::memcpy(pos_, data, size);
    pos_ += size;
  }
  void LengthDelimitedHeader(uint32_t field, size_t payload) {
    Varint(Tag(field, kLengthDelimited));
    Varint(payload);
  }
  void Bytes(uint32_t field, std::string_view bytes) {
    LengthDelimitedHeader(field, bytes.size());
    Raw(bytes.data(), bytes.size());
  }

 private:
  uint8_t* pos_;
};

// Appends fields to a std::string; for small messages (model info, configs) where speed is moot.
class StringWriter {
 public:
  void Varint(uint32_t field, uint64_t value) {
    PutVarint(Tag(field, kVarint));
    PutVarint(value);
  }
  void Bytes(uint32_t field, std::string_view bytes) {
    PutVarint(Tag(field, kLengthDelimited));
    PutVarint(bytes.size());
    out_.append(bytes.data(), bytes.size());
  }
  const std::string& str() const { return out_; }

 private:
  void PutVarint(uint64_t value) { AppendVarint(&out_, value); }
  std::string out_;
};

}  // namespace processor::wire
