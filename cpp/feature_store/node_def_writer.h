// Pieces of a serialized NodeDef (tensorflow/core/framework/node_def.proto, attr_value.proto), written
// with the wire writer: what the graph rewrites build their replacement nodes from.
#pragma once

#include <tensorflow/c/c_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/wire_format.h"

namespace processor::node_def {

// NodeDef fields, and AttrValue's.
constexpr uint32_t kName = 1, kOp = 2, kInput = 3, kAttr = 5;
constexpr uint32_t kAttrS = 2, kAttrI = 3, kAttrB = 5, kAttrType = 6, kAttrShape = 7;

// One entry of NodeDef.attr (a map<string, AttrValue>).
inline std::string AttrEntry(const std::string& key, const std::string& attr_value) {
  wire::StringWriter entry;
  entry.Bytes(1, key);
  entry.Bytes(2, attr_value);
  return entry.str();
}

inline std::string VarintAttr(uint32_t field, int64_t value) {
  wire::StringWriter attr;
  attr.Varint(field, static_cast<uint64_t>(value));
  return attr.str();
}

inline std::string TypeAttr(TF_DataType dtype) { return VarintAttr(kAttrType, dtype); }
inline std::string IntAttr(int64_t value) { return VarintAttr(kAttrI, value); }
inline std::string BoolAttr(bool value) { return VarintAttr(kAttrB, value ? 1 : 0); }

inline std::string StringAttr(const std::string& s) {
  wire::StringWriter attr;
  attr.Bytes(kAttrS, s);
  return attr.str();
}

inline std::string ShapeAttr(const std::vector<int64_t>& dims) {
  wire::StringWriter shape;
  for (int64_t size : dims) {
    wire::StringWriter dim;
    dim.Varint(1, static_cast<uint64_t>(size));
    shape.Bytes(2, dim.str());
  }
  wire::StringWriter attr;
  attr.Bytes(kAttrShape, shape.str());
  return attr.str();
}

}  // namespace processor::node_def
