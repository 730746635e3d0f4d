#include "codec/predict_codec.h"

#include <tensorflow/c/tf_tstring.h>

#include <cstdlib>
#include <cstring>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common/quote.h"
#include "common/shape_string.h"
#include "common/tsan_annotations.h"
#include "common/wire_format.h"
#include "common/dtypes.h"

namespace processor {
namespace {

using wire::Reader;

// string_val's tag (one byte), to read a run of strings in one loop.
constexpr uint8_t kStringValTag = (kStringVal << 3) | wire::kLengthDelimited;

const auto& kFieldNames = kArrayFieldNames;

// Counts a fixed-width repeated field (float, double), packed (setting *packed_run to its bytes) or not.
Status CountFixedValues(Reader& r, uint32_t wire_type, size_t width, int64_t* count, std::string_view* packed_run) {
  const uint32_t unpacked_type = width == 4 ? wire::kFixed32 : wire::kFixed64;
  if (wire_type == wire::kLengthDelimited) {
    std::string_view packed = r.LengthDelimited();
    *packed_run = packed;
    if (packed.size() % width) {
      return Status::InvalidArgument("packed length " + std::to_string(packed.size()) + " is not a multiple of " +
                                     std::to_string(width));
    }
    *count += packed.size() / width;
  } else if (wire_type == unpacked_type) {
    r.Fixed(width);
    *count += 1;
  } else {
    return Status::InvalidArgument("unexpected wire type " + std::to_string(wire_type));
  }
  return Status::Ok();
}

// Counts a packed run of varints (bytes without a continuation bit), checking it is well formed.
// Sixty-four bytes at a time with SSE2 (part of every x86-64), then eight: the terminators of a
// block are its bytes whose high bit is clear.
Status CountPackedVarints(std::string_view packed, int64_t* count) {
  if (packed.empty()) return Status::Ok();
  if (static_cast<uint8_t>(packed.back()) & 0x80) return Status::InvalidArgument("packed varints are truncated");
  const auto too_long = [] { return Status::InvalidArgument("a packed varint is longer than 10 bytes"); };
  constexpr uint64_t kHighBits = 0x8080808080808080ull;
  size_t run = 0;  // continuation bytes since the last terminator
  size_t i = 0;
#if defined(__SSE2__)
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

// Counts a varint repeated field (int32, int64, bool), packed (setting *packed_run to its bytes) or not.
Status CountVarintValues(Reader& r, uint32_t wire_type, int64_t* count, std::string_view* packed_run) {
  if (wire_type == wire::kLengthDelimited) {
    *packed_run = r.LengthDelimited();
    return CountPackedVarints(*packed_run, count);
  }
  if (wire_type != wire::kVarint) return Status::InvalidArgument("unexpected wire type " + std::to_string(wire_type));
  r.Varint();
  *count += 1;
  return Status::Ok();
}

// Whether protobuf reads an occurrence of ArrayProto `field` with `wire_type` as that field: a repeated
// scalar packed or not, dtype as a varint, the shape and strings length-delimited. Other occurrences
// are unknown fields to protobuf (it keeps them aside), and are skipped here likewise.
inline bool ReadsAs(uint32_t field, uint32_t wire_type) {
  switch (field) {
    case kDtype: return wire_type == wire::kVarint;
    case kFloatVal: return wire_type == wire::kLengthDelimited || wire_type == wire::kFixed32;
    case kDoubleVal: return wire_type == wire::kLengthDelimited || wire_type == wire::kFixed64;
    case kIntVal:
    case kInt64Val:
    case kBoolVal: return wire_type == wire::kLengthDelimited || wire_type == wire::kVarint;
    default: return wire_type == wire::kLengthDelimited;  // array_shape, string_val
  }
}

// Calls visit(reader, wire_type) at every occurrence of `field` in the array's pieces (already
// validated by ParseArray) that protobuf reads as the field; visit consumes the value.
template <typename Visit>
void ForEachOccurrence(const ArrayView& array, uint32_t field, Visit&& visit) {
  for (std::string_view piece : array.pieces) {
    Reader r(piece);
    uint32_t f, wire_type;
    while (r.NextField(&f, &wire_type)) {
      if (f == field && ReadsAs(field, wire_type)) visit(r, wire_type);
      else r.Skip(wire_type);
    }
  }
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
template <typename Fn>
void ForEachPackedVarint(std::string_view packed, Fn&& fn) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(packed.data());
  const uint8_t* const end = p + packed.size();
#if defined(__SSE2__)
  // Values below 128 (one byte) and 16384 (two: ids of vocabularies up to that size), sixteen bytes at
  // a time with SSE2: a block whose bytes all end a varint is sixteen values; a block that starts
  // with byte pairs whose first byte continues and second ends starts with that many two-byte values,
  // all decoded at once in 16-bit lanes; a block that starts with a 9- or 10-byte varint (a hashed id)
  // has it decoded from one 8-byte load. Otherwise the block is read one varint at a time.
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
#endif
  while (p < end) fn(ReadCheckedVarint(p));
}

// Writes the varints it is given as int64 values into a tensor of exactly as many. Given two-byte
// values as eight 16-bit lanes, it widens and stores all eight with four vector stores while the
// tensor has room for them: the lanes past the values are overwritten by the values after them.
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

// Calls fn(uint64_t) for every value of varint field `field`, packed or not.
template <typename Fn>
void ForEachVarint(const ArrayView& array, uint32_t field, Fn&& fn) {
  if (array.only_run_field == field) {
    ForEachPackedVarint(array.only_run, fn);
    return;
  }
  ForEachOccurrence(array, field, [&](Reader& r, uint32_t wire_type) {
    if (wire_type != wire::kLengthDelimited) {
      fn(r.Varint());
      return;
    }
    ForEachPackedVarint(r.LengthDelimited(), fn);
  });
}

// memcpy, but up to 24 bytes (a short string, the values of a small input) in a few overlapping
// fixed-size moves instead of a call: a request has one such copy per input, or per string.
inline void CopyBytes(void* out, const void* in, size_t n) {
  char* dst = static_cast<char*>(out);
  const char* src = static_cast<const char*>(in);
  if (n > 24) {
    std::memcpy(dst, src, n);
  } else if (n >= 8) {
    std::memcpy(dst, src, 8);
    if (n > 16) std::memcpy(dst + 8, src + 8, 8);
    std::memcpy(dst + n - 8, src + n - 8, 8);
  } else if (n >= 4) {
    std::memcpy(dst, src, 4);
    std::memcpy(dst + n - 4, src + n - 4, 4);
  } else {
    for (size_t i = 0; i < n; ++i) dst[i] = src[i];
  }
}

// Writes a string of at most TF_TString_SmallCapacity bytes straight into TString's inline form, as
// TF_TString_Copy would, without its type dispatch and its call to memcpy. Most feature strings are
// this short.
void WriteSmallString(const std::string_view s, TF_TString* out) {
  TF_TString_Small* small = &out->u.smll;
  small->size = static_cast<uint8_t>((s.size() << 2) | TF_TSTR_SMALL);
  CopyBytes(small->str, s.data(), s.size());
  small->str[s.size()] = '\0';
}

#if defined(__SSE2__)
static_assert(sizeof(TF_TString) == 24 && TF_TString_SmallCapacity == 22, "TString's inline form is 24 bytes");

// For StageShortString: which of a TString's first 16 bytes (its size byte, then the string's first 15)
// and of its last 8 a string of n bytes keeps from the request. Bytes past the string are zeroed, so
// its terminating zero comes with the two stores.
struct ShortStringMasks {
  alignas(16) uint8_t head[TF_TString_SmallCapacity + 1][16];
  uint64_t tail[TF_TString_SmallCapacity + 1];
};

constexpr ShortStringMasks MakeShortStringMasks() {
  ShortStringMasks masks{};
  for (size_t n = 0; n <= TF_TString_SmallCapacity; ++n) {
    for (size_t byte = 1; byte < 16; ++byte) masks.head[n][byte] = byte <= n ? 0xFF : 0;
    masks.tail[n] = n > 15 ? (uint64_t{1} << (8 * (n - 15))) - 1 : 0;
  }
  return masks;
}

constexpr ShortStringMasks kShortStringMasks = MakeShortStringMasks();
#endif

// Writes the string whose one-byte length `n` (at most the inline capacity) is at `p` in TString's
// inline form. Reads 24 bytes from `p` whatever the length, so `p` must lie more than 128 bytes
// before the input's end, as the callers check. The length byte and the string are read as one block
// and masked into place: two stores per string instead of four (on AMD Zen 1, with one store port,
// the walk over 512 strings took 18 % less time).
inline void StageShortString(const uint8_t* p, const size_t n, TF_TString* out) {
#if defined(__SSE2__)
  __m128i head = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  head = _mm_and_si128(head, _mm_load_si128(reinterpret_cast<const __m128i*>(kShortStringMasks.head[n])));
  head = _mm_or_si128(head, _mm_cvtsi32_si128(static_cast<int>((n << 2) | TF_TSTR_SMALL)));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), head);
  uint64_t tail;
  std::memcpy(&tail, p + 16, 8);
  tail &= kShortStringMasks.tail[n];
  std::memcpy(reinterpret_cast<char*>(out) + 16, &tail, 8);
#else
  TF_TString_Small* small = &out->u.smll;
  small->size = static_cast<uint8_t>((n << 2) | TF_TSTR_SMALL);
  std::memcpy(small->str, p + 1, 16);
  std::memcpy(small->str + 15, p + 16, 8);
  small->str[n] = '\0';
#endif
}

// Whether `count` short strings follow `p` as a run does: each length at most the inline capacity
// and a string_val tag after each string. `p` lies more than 128 bytes before the input's end.
inline bool LooksLikeShortStrings(const uint8_t* p, int count) {
  for (int i = 0; i < count; ++i) {
    if (*p > TF_TString_SmallCapacity) return false;
    p += 1 + *p;
    if (*p != kStringValTag) return false;
    ++p;
  }
  return true;
}

// Walks a run on from the length at `p`, staging each string at `*out` on, while the walk stands
// before `stop` (more than 128 bytes before the input's end) and the strings are short. Returns where
// it stands: at a length, or (with *ended) just past the run's last string.
inline const uint8_t* WalkShortStrings(const uint8_t* p, const uint8_t* const stop, TF_TString** out, bool* ended) {
  TF_TString* next = *out;  // a local: the char stores below may alias any object in memory
  while (p < stop && *p <= TF_TString_SmallCapacity) {
    const size_t size = *p;
    StageShortString(p, size, next++);
    p += 1 + size;
    if (*p != kStringValTag) {
      *ended = true;
      break;
    }
    ++p;
  }
  *out = next;
  return p;
}

// A run of short strings is a chain in which each length locates the next, so a walk over it waits on
// each length in turn. A long run is walked as two chains side by side, which takes little more time
// than one: from `p`, and from the first point past the middle that looks like a string's start (a
// tag before it, four short strings after). The second chain's strings count only if the first,
// walked up to that point, lands on it exactly: then it is a string's start and the two chains are
// the one walk cut in two; otherwise the first chain's strings are kept and the second's dropped.
// Stages what it keeps from `*next` on and moves `*next` past it; returns where the walk stands: at a
// string's length, or (with *ended) just past the run's last string. Needs `end - p` > 384.
const uint8_t* WalkShortStringsInTwo(const uint8_t* p, const uint8_t* const end, TF_TString** next,
                                     TF_TString* const room_end, bool* ended) {
  const uint8_t* const walk_end = end - 128;  // as the single walk: nothing read crosses `end`
  // Each string takes two bytes or more: the first chain stages at most (middle - p) / 2 of them,
  // the second at most (walk_end - middle) / 2 + 1.
  if (room_end - *next < (walk_end - p) / 2 + 2) return p;
  const uint8_t* middle = p + (walk_end - p) / 2;
  const uint8_t* const search_end = middle + 64;  // before walk_end: `end - p` > 384
  while (middle < search_end && !(middle[-1] == kStringValTag && LooksLikeShortStrings(middle, 4))) ++middle;
  if (middle == search_end) return p;
  TF_TString* first = *next;
  TF_TString* const second_start = first + (middle - p) / 2 + 1;
  TF_TString* second = second_start;
  const uint8_t* q = middle;
  bool first_ended = false;
  bool second_ended = false;
  while (p < middle && q < walk_end && *p <= TF_TString_SmallCapacity && *q <= TF_TString_SmallCapacity) {
    const size_t first_size = *p;  // read before the stores, which may alias anything
    const size_t second_size = *q;
    StageShortString(p, first_size, first++);
    StageShortString(q, second_size, second++);
    p += 1 + first_size;
    q += 1 + second_size;
    if (*p != kStringValTag || *q != kStringValTag) {  // a branch, not arithmetic: the chains stay short
      first_ended = *p != kStringValTag;
      second_ended = *q != kStringValTag;
      p += !first_ended;
      q += !second_ended;
      break;
    }
    ++p;
    ++q;
  }
  if (!first_ended) p = WalkShortStrings(p, middle, &first, &first_ended);
  if (first_ended || p != middle) {  // the second chain did not start at a string: only the first counts
    *next = first;
    *ended = first_ended;
    return p;
  }
  if (!second_ended) q = WalkShortStrings(q, walk_end, &second, &second_ended);
  const size_t second_count = second - second_start;
  std::memmove(static_cast<void*>(first), second_start, second_count * sizeof(TF_TString));
  *next = first + second_count;
  *ended = second_ended;
  return q;
}

// Walks the run of string_val fields at the reader (the first one's length, then each one directly
// after it under the one-byte tag, as serializers write a repeated field), checking every length
// against the input, and counts it. Stages each string while every string of the array so far has
// been staged and it fits (see StringStaging); a malformed length latches the reader's error.
void ParseStringRun(Reader& r, StringStaging* staging, ArrayView* array) {
  const uint8_t* p = r.position();
  const uint8_t* const end = r.end();
  TF_TString* next = staging->next;  // locals: the char stores below may alias any object in memory
  TF_TString* const limit = staging->limit;
  // On while every string of the array so far was staged; they are together, since arrays are
  // parsed one at a time.
  bool staging_on = array->staged_count == array->counts[kStringVal];
  if (staging_on && array->staged_count == 0) array->staged_strings = next;
  int64_t count = 0;
  for (;;) {
    if (staging_on) {
      TF_TString* const before = next;
      bool ended = false;
      if (end - p > 384) p = WalkShortStringsInTwo(p, end, &next, limit, &ended);
      // More than 128 bytes from the end, a one-byte length (here at most the inline capacity) cannot
      // run past it, nor can the 23 bytes copied after it: no bounds checks and no branch on the
      // length (the bytes copied past the string are ignored) for most of a run of short strings.
      // Each string takes two bytes or more: a walk of at most twice the room left fits in it.
      if (!ended && end - p > 128) {
        const ptrdiff_t room = limit - next;
        const uint8_t* const stop = (end - 128 - p) / 2 < room ? end - 128 : p + 2 * room;
        p = WalkShortStrings(p, stop, &next, &ended);
      }
      count += next - before;
      if (ended) goto run_ended;
    } else {
      while (end - p > 128 && *p < 0x80) {  // as above, only counting
        p += 1 + *p;
        ++count;
        if (*p != kStringValTag) goto run_ended;
        ++p;
      }
    }
    {
      uint64_t size;
      if (p < end && *p < 0x80) {
        size = *p++;
      } else {
        r.SkipTo(p);
        size = r.Varint();
        if (!r.ok()) return;
        p = r.position();
      }
      if (size > uint64_t(end - p)) {
        r.MarkMalformed();
        return;
      }
      if (staging_on && size <= TF_TString_SmallCapacity && next < limit) {
        WriteSmallString(std::string_view(reinterpret_cast<const char*>(p), size), next++);
      } else {
        staging_on = false;
      }
      p += size;
      ++count;
      if (p >= end || *p != kStringValTag) break;
      ++p;
    }
  }
run_ended:
  r.SkipTo(p);
  array->counts[kStringVal] += count;
  array->staged_count += next - staging->next;  // short of the count for good once one string missed
  staging->next = next;
}

// Appends the dims of an ArrayShape (a repeated array_shape merges its dims, as in protobuf).
Status ParseShape(std::string_view bytes, ArrayView* array) {
  Reader r(bytes);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field != 1) {
      r.Skip(wire_type);
    } else if (wire_type == wire::kLengthDelimited) {
      // A few dims: read and checked in one pass by the reader, not counted first as values are.
      const std::string_view packed = r.LengthDelimited();
      Reader dims(packed);
      while (dims.remaining() > 0) array->dims.push_back(static_cast<int64_t>(dims.Varint()));
      if (!dims.ok()) {
        int64_t count = 0;
        const Status why = CountPackedVarints(packed, &count);  // the counter names what is wrong
        return why.ok() ? Status::InvalidArgument("malformed packed dims") : why;
      }
    } else if (wire_type == wire::kVarint) {
      array->dims.push_back(static_cast<int64_t>(r.Varint()));
    } else {
      r.Skip(wire_type);  // unknown to protobuf, as any field with another wire type
    }
  }
  if (!r.ok()) return Status::InvalidArgument("malformed array_shape");
  return Status::Ok();
}

// Serializers write an ArrayProto's fields in field order: dtype, then array_shape holding one packed
// run of dims, then the values. The dtype and such a shape of one-byte dims (below 128, as batch sizes
// and feature widths mostly are) are read here by matching their bytes, without the field loop, which
// costs more than the rest of a small input's parse. Returns where the loop takes over: right after
// what was read, or at anything else, which the loop reads in any order, merging repeats as protobuf does.
const uint8_t* ReadCanonicalPrefix(const uint8_t* p, const uint8_t* const end, ArrayView* array) {
  constexpr uint8_t kDtypeTag = (kDtype << 3) | wire::kVarint;
  constexpr uint8_t kShapeTag = (kArrayShape << 3) | wire::kLengthDelimited;
  constexpr uint8_t kPackedDimsTag = (1 << 3) | wire::kLengthDelimited;
  if (end - p >= 2 && p[0] == kDtypeTag && p[1] < 0x80) {
    array->dtype = p[1];
    p += 2;
  }
  if (end - p < 2 || p[0] != kShapeTag || p[1] >= 0x80 || p[1] > end - p - 2) return p;
  const size_t shape_size = p[1];
  const uint8_t* const shape = p + 2;
  if (shape_size > 0) {
    if (shape_size < 2 || shape[0] != kPackedDimsTag || shape[1] != shape_size - 2) return p;
    for (size_t i = 2; i < shape_size; ++i) {
      if (shape[i] >= 0x80) return p;
    }
    for (size_t i = 2; i < shape_size; ++i) array->dims.push_back(shape[i]);
  }
  array->has_shape = true;
  return shape + shape_size;
}

Status ParseArray(std::string_view bytes, StringStaging* staging, ArrayView* array) {
  array->pieces.push_back(bytes);
  const uint8_t* const begin = reinterpret_cast<const uint8_t*>(bytes.data());
  const uint8_t* const end = begin + bytes.size();
  const uint8_t* const rest = ReadCanonicalPrefix(begin, end, array);
  Reader r(rest, size_t(end - rest));
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    Status status;
    if (field > kBoolVal || !ReadsAs(field, wire_type)) {
      r.Skip(wire_type);  // an unknown field, or a known one with another wire type: unknown to protobuf
      continue;
    }
    switch (field) {
      case kDtype:
        array->dtype = static_cast<int>(r.Varint());
        break;
      case kArrayShape:
        array->has_shape = true;
        status = ParseShape(r.LengthDelimited(), array);
        break;
      case kFloatVal:
      case kDoubleVal:
      case kIntVal:
      case kInt64Val:
      case kBoolVal: {
        std::string_view packed_run;  // stays null for an unpacked value
        status = field == kFloatVal || field == kDoubleVal
                     ? CountFixedValues(r, wire_type, field == kFloatVal ? 4 : 8, &array->counts[field], &packed_run)
                     : CountVarintValues(r, wire_type, &array->counts[field], &packed_run);
        // One packed run, the usual case, is all MakeTensor needs to know of where the values are.
        const bool only_one = array->value_occurrences++ == 0 && packed_run.data() != nullptr;
        array->only_run_field = only_one ? field : 0;
        array->only_run = packed_run;
        break;
      }
      case kStringVal:
        ParseStringRun(r, staging, array);
        break;
    }
    if (!status.ok()) return status.WithContext(kFieldNames[field]);
  }
  if (!r.ok()) return Status::InvalidArgument("malformed ArrayProto");
  return Status::Ok();
}

// A map entry as serializers write it: the key (under 128 bytes), then one value that ends the entry.
bool SplitCanonicalEntry(std::string_view bytes, std::string_view* key, std::string_view* value) {
  constexpr uint8_t kKeyTag = (1 << 3) | wire::kLengthDelimited;
  constexpr uint8_t kValueTag = (2 << 3) | wire::kLengthDelimited;
  const uint8_t* const begin = reinterpret_cast<const uint8_t*>(bytes.data());
  const uint8_t* const end = begin + bytes.size();
  if (end - begin < 2 || begin[0] != kKeyTag || begin[1] >= 0x80 || begin[1] > end - begin - 2) return false;
  const uint8_t* const tag = begin + 2 + begin[1];
  if (end - tag < 2 || tag[0] != kValueTag) return false;
  size_t size = tag[1];
  const uint8_t* start = tag + 2;
  if (size >= 0x80) {  // two length bytes: a value of 128 bytes to 16 KiB
    if (end - tag < 3 || tag[2] >= 0x80) return false;
    size = (size & 0x7f) | (size_t{tag[2]} << 7);
    start = tag + 3;
  }
  if (size_t(end - start) != size) return false;
  *key = std::string_view(reinterpret_cast<const char*>(begin + 2), begin[1]);
  *value = std::string_view(reinterpret_cast<const char*>(start), size);
  return true;
}

// A map<string, ArrayProto> entry. In other layouts than serializers write, the key may follow the
// value (so values are parsed last) and several value occurrences merge into one ArrayProto, as in
// protobuf.
Status ParseInputEntry(std::string_view bytes, StringStaging* staging, std::string_view* key, ArrayView* array) {
  std::string_view canonical_value;
  if (SplitCanonicalEntry(bytes, key, &canonical_value)) {
    PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(ParseArray(canonical_value, staging, array), "input " + Quote(*key));
    return Status::Ok();
  }
  Reader r(bytes);
  uint32_t field, wire_type;
  std::string_view first_value;
  int values = 0;
  while (r.NextField(&field, &wire_type)) {
    if (field == 1 && wire_type == wire::kLengthDelimited) *key = r.LengthDelimited();
    else if (field == 2 && wire_type == wire::kLengthDelimited) {
      std::string_view value = r.LengthDelimited();
      if (values++ == 0) first_value = value;
    } else {
      r.Skip(wire_type);
    }
  }
  if (!r.ok()) return Status::InvalidArgument("malformed inputs map entry");
  if (values <= 1) {  // no second pass over the entry
    if (values == 1) PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(ParseArray(first_value, staging, array), "input " + Quote(*key));
    return Status::Ok();
  }
  Reader again(bytes);
  while (again.NextField(&field, &wire_type)) {
    if (field == 2 && wire_type == wire::kLengthDelimited) {
      PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(ParseArray(again.LengthDelimited(), staging, array), "input " + Quote(*key));
    } else {
      again.Skip(wire_type);
    }
  }
  return Status::Ok();
}

template <typename T>
Status CopyNarrowInts(const ArrayView& array, int64_t lo, int64_t hi, void* out) {
  T* dst = static_cast<T*>(out);
  bool in_range = true;
  int64_t bad = 0;
  ForEachVarint(array, kIntVal, [&](uint64_t raw) {
    int64_t v = static_cast<int32_t>(raw);  // int_val is int32 on the wire
    if (v < lo || v > hi) {
      if (in_range) bad = v;
      in_range = false;
    }
    *dst++ = static_cast<T>(v);
  });
  if (!in_range) return Status::InvalidArgument("value " + std::to_string(bad) + " is out of range");
  return Status::Ok();
}

// Copies float_val/double_val (packed runs in one copy each) into `out`.
void CopyFixed(const ArrayView& array, uint32_t field, size_t width, void* out) {
  char* dst = static_cast<char*>(out);
  if (array.only_run_field == field) {
    CopyBytes(dst, array.only_run.data(), array.only_run.size());
    return;
  }
  ForEachOccurrence(array, field, [&](Reader& r, uint32_t wire_type) {
    std::string_view bytes = wire_type == wire::kLengthDelimited ? r.LengthDelimited() : r.Fixed(width);
    if (!bytes.empty()) std::memcpy(dst, bytes.data(), bytes.size());
    dst += bytes.size();
  });
}

// Copies the run of string_val fields whose first length is at `p` (ParseArray has checked the run:
// every length is a well-formed varint and every string lies inside the piece, which ends at `end`)
// into TStrings from `*out`, and returns where the run ends. Sets `*heap` when a string is longer than
// the inline capacity and went to the heap.
const uint8_t* CopyStringRun(const uint8_t* p, const uint8_t* const end, TF_TString** out, bool* heap) {
  TF_TString* next = *out;  // a local, not *out: the char stores below may alias any object in memory
  for (;;) {
    // Strings of up to 15 bytes with 16 bytes of the piece after their one-byte length, all but the
    // last few of a run: one 16-byte copy each into TString's inline form, no branch on the length
    // (the bytes copied past the string are ignored), and no end check (the next tag is in the piece).
    while (end - p >= 17 && p[0] < 16) {
      const size_t n = p[0];
      TF_TString_Small* small = &next->u.smll;
      small->size = static_cast<uint8_t>((n << 2) | TF_TSTR_SMALL);
      std::memcpy(small->str, p + 1, 16);
      small->str[n] = '\0';
      ++next;
      p += 1 + n;
      if (*p != kStringValTag) {
        *out = next;
        return p;
      }
      ++p;
    }
    const size_t n = ReadCheckedVarint(p);
    if (n <= TF_TString_SmallCapacity) {
      WriteSmallString(std::string_view(reinterpret_cast<const char*>(p), n), next);
    } else {
      *heap = true;
      TF_TString_Init(next);
      TF_TString_Copy(next, reinterpret_cast<const char*>(p), n);
    }
    ++next;
    p += n;
    if (p == end || *p != kStringValTag) break;
    ++p;
  }
  *out = next;
  return p;
}

// Writes the strings into `out`: the uninitialized memory of TF_AllocateTensor, or an earlier
// request's TStrings, which are all inline (MakeTensor's caller keeps no string tensor that went to the
// heap, and TensorFlow cannot write into a tensor it was fed while the caller holds it): nothing to
// free. Returns whether any string went to the heap (longer than the inline capacity).
bool CopyStrings(const ArrayView& array, TF_TString* out) {
  bool heap = false;
  ForEachOccurrence(array, kStringVal, [&](Reader& r, uint32_t) {
    r.SkipTo(CopyStringRun(r.position(), r.end(), &out, &heap));
  });
  return heap;
}

// ---- encoding

template <typename T>
size_t PackedVarintPayload(const T* values, int64_t n) {
  size_t size = 0;
  for (int64_t i = 0; i < n; ++i) size += wire::VarintSize(static_cast<uint64_t>(static_cast<int64_t>(values[i])));
  return size;
}

// Bytes of the value field(s) of one tensor inside its ArrayProto; 0 elements write nothing (proto3).
Status ValuesSize(TF_DataType dtype, const void* data, int64_t n, size_t* size) {
  size_t payload = 0;
  switch (dtype) {
    case TF_FLOAT: payload = 4 * n; break;
    case TF_DOUBLE: payload = 8 * n; break;
    case TF_BOOL: payload = n; break;
    case TF_INT64: payload = PackedVarintPayload(static_cast<const int64_t*>(data), n); break;
    case TF_INT32: payload = PackedVarintPayload(static_cast<const int32_t*>(data), n); break;
    case TF_INT16: payload = PackedVarintPayload(static_cast<const int16_t*>(data), n); break;
    case TF_INT8: payload = PackedVarintPayload(static_cast<const int8_t*>(data), n); break;
    case TF_UINT8: payload = PackedVarintPayload(static_cast<const uint8_t*>(data), n); break;
    case TF_STRING: {
      const TF_TString* strings = static_cast<const TF_TString*>(data);
      *size = 0;
      for (int64_t i = 0; i < n; ++i) *size += wire::LengthDelimitedSize(TF_TString_GetSize(&strings[i]));
      return Status::Ok();
    }
    default:
      return Status::Internal(std::string("the protocol cannot carry dtype ") + DataTypeName(dtype));
  }
  *size = n ? wire::LengthDelimitedSize(payload) : 0;
  return Status::Ok();
}

template <typename T>
void PutPackedVarints(wire::Writer& w, uint32_t field, const T* values, int64_t n) {
  w.LengthDelimitedHeader(field, PackedVarintPayload(values, n));
  for (int64_t i = 0; i < n; ++i) w.Varint(static_cast<uint64_t>(static_cast<int64_t>(values[i])));
}

void PutValues(wire::Writer& w, TF_DataType dtype, const void* data, int64_t n) {
  if (n == 0) return;
  switch (dtype) {
    case TF_FLOAT: w.LengthDelimitedHeader(kFloatVal, 4 * n); w.Raw(data, 4 * n); break;
    case TF_DOUBLE: w.LengthDelimitedHeader(kDoubleVal, 8 * n); w.Raw(data, 8 * n); break;
    case TF_BOOL: {
      w.LengthDelimitedHeader(kBoolVal, n);
      const bool* values = static_cast<const bool*>(data);
      for (int64_t i = 0; i < n; ++i) w.Varint(values[i] ? 1 : 0);
      break;
    }
    case TF_INT64: PutPackedVarints(w, kInt64Val, static_cast<const int64_t*>(data), n); break;
    case TF_INT32: PutPackedVarints(w, kIntVal, static_cast<const int32_t*>(data), n); break;
    case TF_INT16: PutPackedVarints(w, kIntVal, static_cast<const int16_t*>(data), n); break;
    case TF_INT8: PutPackedVarints(w, kIntVal, static_cast<const int8_t*>(data), n); break;
    case TF_UINT8: PutPackedVarints(w, kIntVal, static_cast<const uint8_t*>(data), n); break;
    case TF_STRING: {
      const TF_TString* strings = static_cast<const TF_TString*>(data);
      for (int64_t i = 0; i < n; ++i) {
        w.Bytes(kStringVal, std::string_view(TF_TString_GetDataPointer(&strings[i]), TF_TString_GetSize(&strings[i])));
      }
      break;
    }
    default: break;  // rejected by ValuesSize
  }
}

// One output as the encoder needs it: what TF says about the tensor, asked once (each TF_Dim or
// TF_TensorType is a call into TF through its tensor interface), and the sizes of its messages.
struct EncodedArray {
  std::string_view name;
  TF_DataType dtype;
  const void* data;
  size_t first_dim, rank;  // its dims in the encoder's list of all outputs' dims
  int64_t elements;
  size_t shape_payload;  // ArrayShape.dim packed payload
  size_t shape_message;  // ArrayShape body
  size_t array_message;  // ArrayProto body
  size_t entry_message;  // map entry body
};

}  // namespace

Status ParsePredictRequest(const void* data, size_t size, RequestView* request) {
  request->Clear();
  request->strings.Reset(size);
  if (size > 0 && data == nullptr) return Status::InvalidArgument("input_data is NULL but input_size is " + std::to_string(size));
  Reader r(data, size);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field == 1 && wire_type == wire::kLengthDelimited) {
      request->signature_name = r.LengthDelimited();
    } else if (field == 2 && wire_type == wire::kLengthDelimited) {
      auto& entry = request->inputs.emplace_back();  // parsed in place: an ArrayView is not small
      PROCESSOR_RETURN_IF_ERROR(ParseInputEntry(r.LengthDelimited(), &request->strings, &entry.first, &entry.second));
    } else if (field == 3 && wire_type == wire::kLengthDelimited) {
      request->output_filter.push_back(r.LengthDelimited());
    } else {
      r.Skip(wire_type);  // unknown fields, and known ones with another wire type, as protobuf does
    }
  }
  if (!r.ok()) return Status::InvalidArgument("the request is not a valid PredictRequest (malformed protocol buffer)");
  return Status::Ok();
}

Status ShapeElementCountError(const ArrayView& array) {
  int64_t n = 1;
  for (int64_t dim : array.dims) {
    if (dim < 0) return Status::InvalidArgument("negative dimension " + std::to_string(dim) + " in array_shape");
    if (__builtin_mul_overflow(n, dim, &n)) return Status::InvalidArgument("array_shape overflows int64");
  }
  return Status::Internal("a valid array_shape was taken for an invalid one");
}

namespace {

// Tensors above this size are not kept for the thread's next request: their memory would stay with it.
constexpr size_t kMaxKeptTensorBytes = 256 << 10;

bool SameDims(const SmallVector<int64_t, 4>& a, const SmallVector<int64_t, 4>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {  // a few dims: a loop, where std::equal calls memcmp
    if (a[i] != b[i]) return false;
  }
  return true;
}

// `previous` when values of `dtype` and shape `dims` can be written into it in place, else null
// (deleting it). Writing into the previous request's tensor saves TF's allocation and release (for
// strings, TF's release visits every element). With `known` (what the caller recorded of it), the
// shape is not asked of TensorFlow, a call per dim. TF_TensorMaybeMove succeeds only while nothing
// else (an output aliasing the input, a variable assigned from it) shares the buffer.
TensorPtr Reusable(TensorPtr previous, TF_DataType dtype, const SmallVector<int64_t, 4>& dims,
                   const KeptTensorShape* known) {
  if (!previous) return nullptr;
  if (known) {
    if (known->dtype != dtype || !SameDims(known->dims, dims)) return nullptr;
  } else {
    if (TF_TensorType(previous.get()) != dtype || TF_NumDims(previous.get()) != static_cast<int>(dims.size())) {
      return nullptr;
    }
    for (size_t i = 0; i < dims.size(); ++i) {
      if (TF_Dim(previous.get(), static_cast<int>(i)) != dims[i]) return nullptr;
    }
  }
  TF_Tensor* shared = previous.release();
  TF_Tensor* moved = TF_TensorMaybeMove(shared);
  if (!moved) TF_DeleteTensor(shared);  // untouched when it cannot move: ours to delete
  return TensorPtr(moved);
}

// The protocol's dtypes' element sizes, without a call into TensorFlow.
size_t ElementSize(TF_DataType dtype) {
  switch (dtype) {
    case TF_DOUBLE:
    case TF_INT64: return 8;
    case TF_FLOAT:
    case TF_INT32: return 4;
    case TF_INT16: return 2;
    case TF_STRING: return sizeof(TF_TString);
    default: return 1;  // TF_BOOL, TF_INT8, TF_UINT8 (MakeTensor takes no other)
  }
}

}  // namespace

Status MakeTensor(const ArrayView& array, TensorPtr* tensor, bool* worth_keeping, KeptTensorShape* shape) {
  const int value_field = ValueFieldForDtype(array.dtype);
  if (array.dtype == 0) return Status::InvalidArgument("dtype is not set (DT_INVALID)");
  if (value_field == 0) {
    return Status::InvalidArgument(std::string("dtype ") + DataTypeName(array.dtype) + " cannot be sent in an ArrayProto");
  }
  for (int field = kFloatVal; field <= static_cast<int>(kBoolVal); ++field) {
    if (field != value_field && array.counts[field]) {
      return Status::InvalidArgument(std::string(DataTypeName(array.dtype)) + " values belong in " +
                                     kFieldNames[value_field] + ", but " + kFieldNames[field] + " is set");
    }
  }
  int64_t n = 0;
  PROCESSOR_RETURN_IF_ERROR(ShapeElementCount(array, &n));
  const int64_t sent = array.counts[value_field];
  if (sent != n) {
    return Status::InvalidArgument("shape " + ShapeString(array.dims) + " needs " + std::to_string(n) + " values but " +
                                   std::to_string(sent) + " were sent in " + kFieldNames[value_field] +
                                   (array.has_shape ? "" : " (array_shape is not set, which means a scalar)"));
  }

  const TF_DataType dtype = static_cast<TF_DataType>(array.dtype);
  const size_t element_size = ElementSize(dtype);
  TensorPtr t = Reusable(std::move(*tensor), dtype, array.dims, shape);
  const bool reused = t != nullptr;
  if (!reused) t.reset(TF_AllocateTensor(dtype, array.dims.data(), static_cast<int>(array.dims.size()), n * element_size));
  if (!t) return Status::Internal("cannot allocate a tensor of " + std::to_string(n) + " elements");
  void* out = TF_TensorData(t.get());
  Status status;
  bool heap_strings = false;
  OverwritingTensorFlowInput overwriting(reused);
  switch (dtype) {
    case TF_FLOAT: CopyFixed(array, kFloatVal, 4, out); break;
    case TF_DOUBLE: CopyFixed(array, kDoubleVal, 8, out); break;
    case TF_INT64: {
      ForEachVarint(array, kInt64Val, Int64Writer(static_cast<int64_t*>(out), n));
      break;
    }
    case TF_BOOL: {
      bool* dst = static_cast<bool*>(out);
      ForEachVarint(array, kBoolVal, [&](uint64_t v) { *dst++ = v != 0; });
      break;
    }
    case TF_INT32: status = CopyNarrowInts<int32_t>(array, INT32_MIN, INT32_MAX, out); break;
    case TF_INT16: status = CopyNarrowInts<int16_t>(array, INT16_MIN, INT16_MAX, out); break;
    case TF_INT8: status = CopyNarrowInts<int8_t>(array, INT8_MIN, INT8_MAX, out); break;
    case TF_UINT8: status = CopyNarrowInts<uint8_t>(array, 0, UINT8_MAX, out); break;
    case TF_STRING:
      if (array.staged_count == n) {
        if (n) std::memcpy(out, array.staged_strings, n * sizeof(TF_TString));  // inline TStrings are plain bytes
      } else {
        heap_strings = CopyStrings(array, static_cast<TF_TString*>(out));
      }
      break;
    default: return Status::Internal("unreachable dtype");
  }
  if (!status.ok()) return status.WithContext(DataTypeName(array.dtype));
  if (worth_keeping) *worth_keeping = !heap_strings && n * element_size <= kMaxKeptTensorBytes;
  if (shape && !reused) {
    shape->dtype = dtype;
    shape->dims = array.dims;
  }
  *tensor = std::move(t);
  return Status::Ok();
}

Status EncodePredictResponse(const std::vector<std::string_view>& names, const OwnedTensors& tensors, void** data,
                             int* size) {
  ReadingTensorFlowOutputs outputs_written_by_tensorflow;
  SmallVector<EncodedArray, 8> plan;
  SmallVector<int64_t, 16> dims;
  size_t total = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    TF_Tensor* tensor = tensors[i];
    const int rank = TF_NumDims(tensor);
    EncodedArray a{names[i], TF_TensorType(tensor), TF_TensorData(tensor), dims.size(), size_t(rank), 1, 0, 0, 0, 0};
    for (int d = 0; d < rank; ++d) {
      const int64_t dim = TF_Dim(tensor, d);
      dims.push_back(dim);
      a.elements *= dim;
      a.shape_payload += wire::VarintSize(static_cast<uint64_t>(dim));
    }
    size_t values_size = 0;
    PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(ValuesSize(a.dtype, a.data, a.elements, &values_size),
                                           "output " + Quote(a.name));
    a.shape_message = a.shape_payload ? wire::LengthDelimitedSize(a.shape_payload) : 0;
    a.array_message = 1 + wire::VarintSize(a.dtype) + wire::LengthDelimitedSize(a.shape_message) + values_size;
    a.entry_message = wire::LengthDelimitedSize(a.name.size()) + wire::LengthDelimitedSize(a.array_message);
    total += wire::LengthDelimitedSize(a.entry_message);
    plan.push_back(a);
  }
  if (total > static_cast<size_t>(INT32_MAX)) {
    return Status::Internal("the response would be " + std::to_string(total) + " bytes, more than the ABI's int size");
  }
  uint8_t* buffer = static_cast<uint8_t*>(std::malloc(total ? total : 1));
  if (!buffer) return Status::Internal("out of memory for a " + std::to_string(total) + "-byte response");
  wire::Writer w(buffer);
  for (const EncodedArray& a : plan) {
    w.LengthDelimitedHeader(1, a.entry_message);  // PredictResponse.outputs entry
    w.Bytes(1, a.name);                           // key
    w.LengthDelimitedHeader(2, a.array_message);  // value: ArrayProto
    w.Varint(wire::Tag(kDtype, wire::kVarint));
    w.Varint(a.dtype);
    w.LengthDelimitedHeader(kArrayShape, a.shape_message);  // always present: a scalar has an empty shape
    if (a.shape_payload) {
      w.LengthDelimitedHeader(1, a.shape_payload);
      for (size_t d = a.first_dim; d < a.first_dim + a.rank; ++d) w.Varint(static_cast<uint64_t>(dims[d]));
    }
    PutValues(w, a.dtype, a.data, a.elements);
  }
  if (static_cast<size_t>(w.position() - buffer) != total) {
    std::free(buffer);
    return Status::Internal("response size mismatch while encoding");
  }
  *data = buffer;
  *size = static_cast<int>(total);
  return Status::Ok();
}

}  // namespace processor
