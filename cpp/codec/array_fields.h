// An ArrayProto's fields as protobuf reads them: which occurrences count, and the values of a field
// wherever they are (packed runs, unpacked values, repeated occurrences merged). The request parser
// counts with these rules and the tensor builder copies with them.
#pragma once

#include <cstdint>
#include <string_view>

#include "codec/packed_varints.h"
#include "codec/predict_codec.h"
#include "common/dtypes.h"
#include "common/wire_format.h"

namespace processor::codec {

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
  wire::ForEachOccurrence(array.pieces, field, [](uint32_t f, uint32_t w) { return ReadsAs(f, w); }, visit);
}

// Calls fn(uint64_t) for every value of varint field `field`, packed or not.
template <typename Fn>
void ForEachVarint(const ArrayView& array, uint32_t field, Fn&& fn) {
  if (array.only_run_field == field) {
    ForEachPackedVarint(array.only_run, fn);
    return;
  }
  ForEachOccurrence(array, field, [&](wire::Reader& r, uint32_t wire_type) {
    if (wire_type != wire::kLengthDelimited) {
      fn(r.Varint());
      return;
    }
    ForEachPackedVarint(r.LengthDelimited(), fn);
  });
}

}  // namespace processor::codec
