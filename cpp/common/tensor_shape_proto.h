// A serialized TensorShapeProto (tensorflow/core/framework/tensor_shape.proto), read with the wire
// reader: what a signature's TensorInfo and a NodeDef's shape attr both hold.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "common/wire_format.h"

namespace processor {

// Appends the shape's dims to `dims` (-1 for unknown ones); returns its unknown_rank.
inline bool ReadTensorShape(std::string_view bytes, std::vector<int64_t>* dims) {
  wire::Reader r(bytes);
  uint32_t field, wire_type;
  bool unknown_rank = false;
  while (r.NextField(&field, &wire_type)) {
    if (field == 2 && wire_type == wire::kLengthDelimited) {  // Dim
      wire::Reader dim(r.LengthDelimited());
      int64_t size = 0;
      uint32_t f, w;
      while (dim.NextField(&f, &w)) {
        if (f == 1 && w == wire::kVarint) size = static_cast<int64_t>(dim.Varint());
        else dim.Skip(w);
      }
      dims->push_back(size);
    } else if (field == 3 && wire_type == wire::kVarint) {
      unknown_rank = r.Varint() != 0;
    } else {
      r.Skip(wire_type);
    }
  }
  return unknown_rank;
}

}  // namespace processor
