#include "model/meta_graph.h"

#include <algorithm>

#include "common/wire_format.h"

namespace processor {
namespace {

using wire::Reader;

// Field numbers of tensorflow/core/protobuf/meta_graph.proto.
enum : uint32_t { kMetaSaverDef = 3, kMetaCollectionDef = 4, kMetaSignatureDef = 5 };

void ParseShape(std::string_view bytes, TensorSpec* spec) {
  Reader r(bytes);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field == 2 && wire_type == wire::kLengthDelimited) {  // Dim
      Reader dim(r.LengthDelimited());
      int64_t size = 0;
      uint32_t f, w;
      while (dim.NextField(&f, &w)) {
        if (f == 1 && w == wire::kVarint) size = static_cast<int64_t>(dim.Varint());
        else dim.Skip(w);
      }
      spec->dims.push_back(size);
    } else if (field == 3 && wire_type == wire::kVarint) {
      spec->unknown_rank = r.Varint() != 0;
    } else {
      r.Skip(wire_type);
    }
  }
}

TensorSpec ParseTensorInfo(std::string_view bytes) {
  TensorSpec spec;
  Reader r(bytes);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field == 1 && wire_type == wire::kLengthDelimited) spec.tensor_name = std::string(r.LengthDelimited());
    else if (field == 2 && wire_type == wire::kVarint) spec.dtype = static_cast<int>(r.Varint());
    else if (field == 3 && wire_type == wire::kLengthDelimited) ParseShape(r.LengthDelimited(), &spec);
    else r.Skip(wire_type);
  }
  return spec;
}

// A map<string, M> entry: key = 1, value = 2.
std::pair<std::string, std::string_view> ParseMapEntry(std::string_view bytes) {
  std::pair<std::string, std::string_view> entry;
  Reader r(bytes);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field == 1 && wire_type == wire::kLengthDelimited) entry.first = std::string(r.LengthDelimited());
    else if (field == 2 && wire_type == wire::kLengthDelimited) entry.second = r.LengthDelimited();
    else r.Skip(wire_type);
  }
  return entry;
}

SignatureSpec ParseSignature(std::string_view bytes) {
  SignatureSpec sig;
  Reader r(bytes);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if ((field == 1 || field == 2) && wire_type == wire::kLengthDelimited) {
      auto [alias, info] = ParseMapEntry(r.LengthDelimited());
      TensorSpec spec = ParseTensorInfo(info);
      spec.alias = alias;
      (field == 1 ? sig.inputs : sig.outputs).push_back(std::move(spec));
    } else if (field == 3 && wire_type == wire::kLengthDelimited) {
      sig.method_name = std::string(r.LengthDelimited());
    } else {
      r.Skip(wire_type);
    }
  }
  auto by_alias = [](const TensorSpec& a, const TensorSpec& b) { return a.alias < b.alias; };
  std::sort(sig.inputs.begin(), sig.inputs.end(), by_alias);
  std::sort(sig.outputs.begin(), sig.outputs.end(), by_alias);
  return sig;
}

SaverSpec ParseSaver(std::string_view bytes) {
  SaverSpec saver;
  Reader r(bytes);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field == 1 && wire_type == wire::kLengthDelimited) saver.filename_tensor_name = std::string(r.LengthDelimited());
    else if (field == 3 && wire_type == wire::kLengthDelimited) saver.restore_op_name = std::string(r.LengthDelimited());
    else r.Skip(wire_type);
  }
  return saver;
}

// CollectionDef.node_list (field 1) is a NodeList whose `value` (field 1) holds node names.
std::vector<std::string> ParseNodeList(std::string_view collection) {
  std::vector<std::string> names;
  Reader r(collection);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field == 1 && wire_type == wire::kLengthDelimited) {
      Reader list(r.LengthDelimited());
      uint32_t f, w;
      while (list.NextField(&f, &w)) {
        if (f == 1 && w == wire::kLengthDelimited) names.emplace_back(list.LengthDelimited());
        else list.Skip(w);
      }
    } else {
      r.Skip(wire_type);
    }
  }
  return names;
}

}  // namespace

Status ParseMetaGraph(std::string_view serialized, MetaGraphSpec* spec) {
  Reader r(serialized);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (wire_type != wire::kLengthDelimited) {
      r.Skip(wire_type);
      continue;
    }
    std::string_view bytes = r.LengthDelimited();
    if (field == kMetaSaverDef) {
      spec->saver = ParseSaver(bytes);
    } else if (field == kMetaSignatureDef) {
      auto [name, signature] = ParseMapEntry(bytes);
      spec->signatures[name] = ParseSignature(signature);
    } else if (field == kMetaCollectionDef) {
      auto [name, collection] = ParseMapEntry(bytes);
      if (name == "table_initializer") spec->table_initializers = ParseNodeList(collection);
    }
  }
  if (!r.ok()) return Status::Internal("the SavedModel's MetaGraphDef is not a valid protocol buffer");
  return Status::Ok();
}

const char* DataTypeName(int dtype) {
  static const char* const kNames[] = {
      "DT_INVALID", "DT_FLOAT",  "DT_DOUBLE",   "DT_INT32",   "DT_UINT8",  "DT_INT16",   "DT_INT8",
      "DT_STRING",  "DT_COMPLEX64", "DT_INT64", "DT_BOOL",    "DT_QINT8",  "DT_QUINT8",  "DT_QINT32",
      "DT_BFLOAT16", "DT_QINT16", "DT_QUINT16", "DT_UINT16", "DT_COMPLEX128", "DT_HALF", "DT_RESOURCE",
      "DT_VARIANT"};
  if (dtype < 0 || dtype >= int(sizeof(kNames) / sizeof(kNames[0]))) return "DT_INVALID";
  return kNames[dtype];
}

}  // namespace processor
