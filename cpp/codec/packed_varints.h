// Packed varints, the codec's hottest loops: counting and checking a run as the request is parsed,
// then decoding it into the tensor. Header-only so that each caller's loop is compiled with its own
// per-value function inlined (a call per value would cost more than the decoding).
//
// The SSE2 paths (part of every x86-64) and the scalar ones both compile on x86-64: kVector selects
// one, and tests/unit/codec_test.cc checks that both give the same answers.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common/status.h"

namespace processor::codec {

#if defined(__SSE2__)
inline constexpr bool kSse2 = true;
#else
inline constexpr bool kSse2 = false;
#endif

// Counts a packed run of varints (bytes without a continuation bit), checking it is well formed.
// Sixty-four bytes at a time with SSE2 (part of every x86-64), then eight: the terminators of a
// block are its bytes whose high bit is clear.
// Buys: counting 512 two-byte ids 540 -> 225 ns (one over-long check per 64-byte block; latency_bench
// codec).
template <bool kVector = kSse2>
Status CountPackedVarints(std::string_view packed, int64_t* count) {
  if (packed.empty()) return Status::Ok();
  if (static_cast<uint8_t>(packed.back()) & 0x80) return Status::InvalidArgument("packed varints are truncated");
  const auto too_long = [] { return Status::InvalidArgument("a packed varint is longer than 10 bytes"); };
  constexpr uint64_t kHighBits = 0x8080808080808080ull;
  size_t run = 0;  // continuation bytes since the last terminator
  size_t i = 0;
#if defined(__SSE2__)
  if constexpr (kVector) {
    const __m128i high_bits = _mm_set1_epi8(static_cast<char>(0x80));
    __m128i sums = _mm_setzero_si128();
    for (; i + 64 <= packed.size(); i += 64) {
      uint64_t continuing = 0;  // bit k: byte k's high bit
      for (int part = 0; part < 4; ++part) {
        const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed.data() + i + 16 * part));
        continuing |= uint64_t(static_cast<uint32_t>(_mm_movemask_epi8(bytes))) << (16 * part);
        // A terminator byte's high bit moved to its bottom bit (a 16-bit shift keeps bytes apart),
        // summed eight bytes at a time.
        sums = _mm_add_epi64(sums, _mm_sad_epu8(_mm_srli_epi16(_mm_andnot_si128(bytes, high_bits), 7),
                                                _mm_setzero_si128()));
      }
      uint64_t ten = continuing & (continuing >> 1);                      // bit k: bytes k..k+1 continue
      ten &= ten >> 2;                                                    // k..k+3
      ten &= ten >> 4;                                                    // k..k+7
      if (ten & (continuing >> 8) & (continuing >> 9)) return too_long();  // k..k+9, inside the block
      const uint64_t terminators = ~continuing;  // not 0, which is ten bytes that continue
      if (run + __builtin_ctzll(terminators) >= 10) return too_long();    // the varint ending at the first
      run = static_cast<size_t>(__builtin_clzll(terminators));           // bytes after the last terminator
    }
    *count += _mm_cvtsi128_si64(sums) + _mm_cvtsi128_si64(_mm_unpackhi_epi64(sums, sums));
  }
#endif
  for (; i + 8 <= packed.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, packed.data() + i, 8);  // little-endian: byte k is bits 8k..8k+7
    const uint64_t terminators = ~word & kHighBits;
    if (!terminators) {
      run += 8;
      if (run >= 10) return too_long();
      continue;
    }
    if (run + __builtin_ctzll(terminators) / 8 >= 10) return too_long();  // the varint ending at the first
    // Each terminator is one bit at the top of its byte: moved to the bottom, one multiply sums the bytes
    // (a portable popcount; the builtin is a library call on baseline x86-64).
    *count += static_cast<int64_t>(((terminators >> 7) * 0x0101010101010101ull) >> 56);
    run = 7 - (63 - __builtin_clzll(terminators)) / 8;  // bytes after the last terminator
  }
  for (; i < packed.size(); ++i) {
    if (static_cast<uint8_t>(packed[i]) & 0x80) {
      if (++run >= 10) return too_long();
    } else {
      run = 0;
      ++*count;
    }
  }
  return Status::Ok();
}

// Reads the varint at `p` and moves `p` past it, without bounds checks: for bytes a checking pass
// (CountPackedVarints, Reader) has already accepted, where no varint is longer than 10 bytes and every
// one ends inside the input.
inline uint64_t ReadCheckedVarint(const uint8_t*& p) {
  uint64_t value = p[0];
  if (value < 0x80) {
    ++p;
    return value;
  }
  if (p[1] < 0x80) {  // ids below 16384: the common case
    value = (value & 0x7f) | (uint64_t(p[1]) << 7);
    p += 2;
    return value;
  }
  value &= 0x7f;
  p += 1;
  int shift = 7;
  uint64_t byte;
  do {
    byte = *p++;
    value |= (byte & 0x7f) << shift;
    shift += 7;
  } while (byte & 0x80);
  return value;
}

// ReadCheckedVarint for a varint of 9 or 10 bytes, without a loop over its bytes: its first eight are
// loaded as one word and their 7-bit groups packed together in three steps. Hashed ids (64-bit feature
// hashes, the common id in recommendation requests) are such varints.
// Buys: -20 to -25 % instructions for a request of 20,000 hashed int64 ids (make profile).
inline uint64_t ReadNineOrTenByteVarint(const uint8_t*& p) {
  uint64_t word;
  std::memcpy(&word, p, 8);  // little-endian: byte k is bits 8k..8k+7
  uint64_t x = word & 0x7f7f7f7f7f7f7f7full;
  x = ((x & 0x7f007f007f007f00ull) >> 1) | (x & 0x007f007f007f007full);
  x = ((x & 0x3fff00003fff0000ull) >> 2) | (x & 0x00003fff00003fffull);
  x = ((x & 0x0fffffff00000000ull) >> 4) | (x & 0x000000000fffffffull);
  x |= uint64_t{p[8] & 0x7fu} << 56;
  if (p[8] & 0x80) {
    x |= uint64_t{p[9]} << 63;
    p += 10;
  } else {
    p += 9;
  }
  return x;
}

#if defined(__SSE2__)
// Values of two-byte varints, decoded together: eight 16-bit lanes, the first `count` of them values.
struct TwoByteValues {
  __m128i lanes;
  int count;
};
#endif

// Calls fn(uint64_t) for every varint of a packed run that CountPackedVarints accepted, or, when fn
// takes them, fn(TwoByteValues) for values decoded several at a time.
template <bool kVector = kSse2, typename Fn>
void ForEachPackedVarint(std::string_view packed, Fn&& fn) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(packed.data());
  const uint8_t* const end = p + packed.size();
#if defined(__SSE2__)
  if constexpr (kVector) {
    // Values below 128 (one byte) and 16384 (two: ids of vocabularies up to that size), sixteen bytes at
    // a time with SSE2: a block whose bytes all end a varint is sixteen values; a block that starts
    // with byte pairs whose first byte continues and second ends starts with that many two-byte values,
    // all decoded at once in 16-bit lanes; a block that starts with a 9- or 10-byte varint (a hashed id)
    // has it decoded from one 8-byte load. Otherwise the block is read one varint at a time.
    // Buys: -14 % instructions at batch 512, -5 % at 64, with the 16-byte string copies (make profile).
    const __m128i low_seven = _mm_set1_epi16(0x007f);
    const __m128i high_seven = _mm_set1_epi16(0x7f00);
    while (end - p >= 16) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      const uint32_t continuing = static_cast<uint32_t>(_mm_movemask_epi8(bytes));  // bit k: byte k's high bit
      if (continuing == 0) {
        for (int k = 0; k < 16; ++k) fn(uint64_t{p[k]});
        p += 16;
        continue;
      }
      const uint32_t not_pairs = continuing ^ 0x5555u;  // 0x5555: bytes 0, 2, 4... continue, 1, 3, 5... end
      const int pairs = not_pairs ? __builtin_ctz(not_pairs) / 2 : 8;
      if (pairs == 0) {
        if ((continuing & 0xFF) == 0xFF) {  // the first eight bytes continue: a 9- or 10-byte varint
          fn(ReadNineOrTenByteVarint(p));
          continue;
        }
        // Varints of three to eight bytes, or a one-byte one first: this block one at a time. When
        // their lengths repeat, the byte loop's branches are predicted and the CPU runs ahead, where a
        // loop-free decoder would wait for each length to be computed.
        const uint8_t* const block_end = p + 16;
        while (p < block_end) fn(ReadCheckedVarint(p));
        continue;
      }
      const __m128i values =
          _mm_or_si128(_mm_and_si128(bytes, low_seven), _mm_srli_epi16(_mm_and_si128(bytes, high_seven), 1));
      if constexpr (std::is_invocable_v<Fn&, TwoByteValues>) {
        fn(TwoByteValues{values, pairs});
      } else {
        alignas(16) uint16_t lanes[8];
        _mm_store_si128(reinterpret_cast<__m128i*>(lanes), values);
        for (int k = 0; k < pairs; ++k) fn(uint64_t{lanes[k]});
      }
      p += 2 * pairs;
      if (pairs < 8) fn(ReadCheckedVarint(p));  // the varint that broke the pattern
    }
  }
#endif
  while (p < end) fn(ReadCheckedVarint(p));
}

// Writes the varints it is given as int64 values into a tensor of exactly as many. Given two-byte
// values as eight 16-bit lanes, it widens and stores all eight with four vector stores while the
// tensor has room for them: the lanes past the values are overwritten by the values after them.
// Buys: decoding 512 two-byte ids -25 % (latency_bench codec).
class Int64Writer {
 public:
  Int64Writer(int64_t* out, int64_t count) : next_(out), end_(out + count) {}

  void operator()(uint64_t value) { *next_++ = static_cast<int64_t>(value); }

#if defined(__SSE2__)
  void operator()(TwoByteValues values) {
    const __m128i lanes = values.lanes;
    if (end_ - next_ >= 8) {
      const __m128i zero = _mm_setzero_si128();
      const __m128i low = _mm_unpacklo_epi16(lanes, zero);
      const __m128i high = _mm_unpackhi_epi16(lanes, zero);
      __m128i* out = reinterpret_cast<__m128i*>(next_);
      _mm_storeu_si128(out, _mm_unpacklo_epi32(low, zero));
      _mm_storeu_si128(out + 1, _mm_unpackhi_epi32(low, zero));
      _mm_storeu_si128(out + 2, _mm_unpacklo_epi32(high, zero));
      _mm_storeu_si128(out + 3, _mm_unpackhi_epi32(high, zero));
    } else {
      alignas(16) uint16_t each[8];
      _mm_store_si128(reinterpret_cast<__m128i*>(each), lanes);
      for (int k = 0; k < values.count; ++k) next_[k] = each[k];
    }
    next_ += values.count;
  }
#endif

 private:
  int64_t* next_;
  int64_t* const end_;
};

}  // namespace processor::codec
