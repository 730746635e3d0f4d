// Runs of repeated strings (string_val), the codec's other hot loop: staged into TString's inline form
// as the request is parsed (ParseStringRun), copied into the tensor (CopyStrings).
#include "codec/string_runs.h"

#include "codec/array_fields.h"
#include "codec/packed_varints.h"

namespace processor::codec {
namespace {

using wire::Reader;

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
// Buys: the walk over 512 strings -18 % (latency_bench codec, AMD Zen 1).
template <bool kVector>
inline void StageShortString(const uint8_t* p, const size_t n, TF_TString* out) {
#if defined(__SSE2__)
  if constexpr (kVector) {
    __m128i head = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    head = _mm_and_si128(head, _mm_load_si128(reinterpret_cast<const __m128i*>(kShortStringMasks.head[n])));
    head = _mm_or_si128(head, _mm_cvtsi32_si128(static_cast<int>((n << 2) | TF_TSTR_SMALL)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), head);
    uint64_t tail;
    std::memcpy(&tail, p + 16, 8);
    tail &= kShortStringMasks.tail[n];
    std::memcpy(reinterpret_cast<char*>(out) + 16, &tail, 8);
    return;
  }
#endif
  TF_TString_Small* small = &out->u.smll;
  small->size = static_cast<uint8_t>((n << 2) | TF_TSTR_SMALL);
  std::memcpy(small->str, p + 1, 16);
  std::memcpy(small->str + 15, p + 16, 8);
  small->str[n] = '\0';
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
template <bool kVector>
inline const uint8_t* WalkShortStrings(const uint8_t* p, const uint8_t* const stop, TF_TString** out, bool* ended) {
  TF_TString* next = *out;  // a local: the char stores below may alias any object in memory
  while (p < stop && *p <= TF_TString_SmallCapacity) {
    const size_t size = *p;
    StageShortString<kVector>(p, size, next++);
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
// Buys: a run of 512 short strings 1,065 -> ~700 ns (latency_bench codec).
template <bool kVector>
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
    StageShortString<kVector>(p, first_size, first++);
    StageShortString<kVector>(q, second_size, second++);
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
  if (!first_ended) p = WalkShortStrings<kVector>(p, middle, &first, &first_ended);
  if (first_ended || p != middle) {  // the second chain did not start at a string: only the first counts
    *next = first;
    *ended = first_ended;
    return p;
  }
  if (!second_ended) q = WalkShortStrings<kVector>(q, walk_end, &second, &second_ended);
  const size_t second_count = second - second_start;
  std::memmove(static_cast<void*>(first), second_start, second_count * sizeof(TF_TString));
  *next = first + second_count;
  *ended = second_ended;
  return q;
}

}  // namespace

// Walks the run of string_val fields at the reader (the first one's length, then each one directly
// after it under the one-byte tag, as serializers write a repeated field), checking every length
// against the input, and counts it. Stages each string while every string of the array so far has
// been staged and it fits (see StringStaging); a malformed length latches the reader's error.
template <bool kVector>
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
      if (end - p > 384) p = WalkShortStringsInTwo<kVector>(p, end, &next, limit, &ended);
      // More than 128 bytes from the end, a one-byte length (here at most the inline capacity) cannot
      // run past it, nor can the 23 bytes copied after it: no bounds checks and no branch on the
      // length (the bytes copied past the string are ignored) for most of a run of short strings.
      // Each string takes two bytes or more: a walk of at most twice the room left fits in it.
      if (!ended && end - p > 128) {
        const ptrdiff_t room = limit - next;
        const uint8_t* const stop = (end - 128 - p) / 2 < room ? end - 128 : p + 2 * room;
        p = WalkShortStrings<kVector>(p, stop, &next, &ended);
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


template void ParseStringRun<false>(Reader& r, StringStaging* staging, ArrayView* array);
#if defined(__SSE2__)
template void ParseStringRun<true>(Reader& r, StringStaging* staging, ArrayView* array);
#endif

namespace {

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
    // Buys: with the SSE2 varint blocks, -14 % instructions at batch 512 (make profile).
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

}  // namespace

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

}  // namespace processor::codec
