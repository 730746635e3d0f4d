// Runs of repeated strings (string_val): what the request parser and the tensor builder share of them
// (string_runs.cc).
#pragma once

#include <tensorflow/c/tf_tstring.h>

#include <cstdint>
#include <cstring>
#include <string_view>

#include "codec/packed_varints.h"
#include "codec/predict_codec.h"
#include "common/dtypes.h"
#include "common/wire_format.h"

namespace processor::codec {

// string_val's tag (one byte), to read a run of strings in one loop.
constexpr uint8_t kStringValTag = (kStringVal << 3) | wire::kLengthDelimited;

// memcpy, but up to 24 bytes (a short string, the values of a small input) in a few overlapping
// fixed-size moves instead of a call: a request has one such copy per input, or per string.
// Buys: no libc call per input or short string; with the other per-input changes, 486 -> 331 parse and
// 548 -> 458 binding instructions per input on a 300-input request (make profile).
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
// Buys: -18 % instructions at batch 512 (make profile).
inline void WriteSmallString(const std::string_view s, TF_TString* out) {
  TF_TString_Small* small = &out->u.smll;
  small->size = static_cast<uint8_t>((s.size() << 2) | TF_TSTR_SMALL);
  CopyBytes(small->str, s.data(), s.size());
  small->str[s.size()] = '\0';
}

// Walks the run of string_val fields at the reader, checking every length against the input, counts
// it into array->counts, and stages its strings while they fit (string_runs.cc says how). kVector:
// the SSE2 stores, or the scalar ones (both are compiled on x86-64, and tested against each other).
template <bool kVector = kSse2>
void ParseStringRun(wire::Reader& r, StringStaging* staging, ArrayView* array);

// Writes the array's strings (ParseArray checked them) into `out`; whether any went to the heap.
bool CopyStrings(const ArrayView& array, TF_TString* out);

}  // namespace processor::codec
