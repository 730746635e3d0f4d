#include "model/meta_graph.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "common/tensor_shape_proto.h"
#include "common/wire_format.h"

namespace processor {
namespace {

using wire::Reader;

// Field numbers of tensorflow/core/protobuf/meta_graph.proto.
enum : uint32_t {
  kMetaInfoDef = 1, kMetaGraphDef = 2, kMetaSaverDef = 3, kMetaCollectionDef = 4, kMetaSignatureDef = 5,
  kMetaAssetFileDef = 6
};
enum : uint32_t { kSavedModelMetaGraphs = 2, kMetaInfoTags = 4 };

TensorSpec ParseTensorInfo(std::string_view bytes) {
  TensorSpec spec;
  Reader r(bytes);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field == 1 && wire_type == wire::kLengthDelimited) spec.tensor_name = std::string(r.LengthDelimited());
    else if (field == 2 && wire_type == wire::kVarint) spec.dtype = static_cast<int>(r.Varint());
    else if (field == 3 && wire_type == wire::kLengthDelimited)
      spec.unknown_rank = ReadTensorShape(r.LengthDelimited(), &spec.dims);
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

// A CollectionDef's lists: node_list (1), bytes_list (2), any_list (5), each a message whose
// `repeated value = 1` holds the items.
enum CollectionList : uint32_t { kNodeList = 1, kBytesList = 2, kAnyList = 5 };

// Calls visit(item bytes) for every value of the collection's list `kind`.
template <typename Visit>
void ForEachCollectionValue(std::string_view collection, CollectionList kind, Visit&& visit) {
  Reader r(collection);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field != kind || wire_type != wire::kLengthDelimited) {
      r.Skip(wire_type);
      continue;
    }
    Reader list(r.LengthDelimited());
    uint32_t f, w;
    while (list.NextField(&f, &w)) {
      if (f == 1 && w == wire::kLengthDelimited) visit(list.LengthDelimited());
      else list.Skip(w);
    }
  }
}

// The node names of a collection's node_list.
std::vector<std::string> ParseNodeList(std::string_view collection) {
  std::vector<std::string> names;
  ForEachCollectionValue(collection, kNodeList, [&](std::string_view name) { names.emplace_back(name); });
  return names;
}

std::vector<std::string> ParseTags(std::string_view meta_info) {
  std::vector<std::string> tags;
  Reader r(meta_info);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field == kMetaInfoTags && wire_type == wire::kLengthDelimited) tags.emplace_back(r.LengthDelimited());
    else r.Skip(wire_type);
  }
  return tags;
}

// AssetFileDef: tensor_info = 1 (TensorInfo.name = 1), filename = 2.
AssetFile ParseAsset(std::string_view bytes) {
  AssetFile asset;
  Reader r(bytes);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field == 1 && wire_type == wire::kLengthDelimited) asset.tensor_name = ParseTensorInfo(r.LengthDelimited()).tensor_name;
    else if (field == 2 && wire_type == wire::kLengthDelimited) asset.filename = std::string(r.LengthDelimited());
    else r.Skip(wire_type);
  }
  return asset;
}

// The legacy "saved_model_assets" collection TF1's SavedModelBuilder writes: an any_list of Any
// {type_url 1, value 2}, each value an AssetFileDef.
std::vector<AssetFile> ParseAssetCollection(std::string_view collection) {
  std::vector<AssetFile> assets;
  ForEachCollectionValue(collection, kAnyList, [&](std::string_view item) {
    Reader any(item);
    uint32_t field, wire_type;
    while (any.NextField(&field, &wire_type)) {
      if (field == 2 && wire_type == wire::kLengthDelimited) assets.push_back(ParseAsset(any.LengthDelimited()));
      else any.Skip(wire_type);
    }
  });
  return assets;
}

std::vector<int64_t> ParseInts(Reader& r, uint32_t wire_type) {
  std::vector<int64_t> values;
  if (wire_type == wire::kLengthDelimited) {
    Reader packed(r.LengthDelimited());
    while (packed.remaining() && packed.ok()) values.push_back(static_cast<int64_t>(packed.Varint()));
  } else {
    values.push_back(static_cast<int64_t>(r.Varint()));
  }
  return values;
}

// The "variables" collection: a BytesList (field 2) of VariableDef. A VariableDef's variable_name is
// field 1, its SaveSliceInfoDef field 4 {full_name 1, full_shape 2, var_offset 3, var_shape 4}.
void ParseSavedSlices(std::string_view collection, std::map<std::string, SavedSlice>* slices) {
  ForEachCollectionValue(collection, kBytesList, [&](std::string_view variable_def) {
    Reader variable(variable_def);
    std::string name;
    SavedSlice slice;
    std::vector<int64_t> full_shape, offset, shape;
    uint32_t vf, vw;
    while (variable.NextField(&vf, &vw)) {
      if (vf == 1 && vw == wire::kLengthDelimited) {
        name = std::string(variable.LengthDelimited());
      } else if (vf == 4 && vw == wire::kLengthDelimited) {
        Reader info(variable.LengthDelimited());
        uint32_t sf, sw;
        while (info.NextField(&sf, &sw)) {
          if (sf == 1 && sw == wire::kLengthDelimited) slice.full_name = std::string(info.LengthDelimited());
          else if (sf == 2) full_shape = ParseInts(info, sw);
          else if (sf == 3) offset = ParseInts(info, sw);
          else if (sf == 4) shape = ParseInts(info, sw);
          else info.Skip(sw);
        }
      } else {
        variable.Skip(vw);
      }
    }
    if (slice.full_name.empty() || full_shape.empty() || offset.size() != full_shape.size() ||
        shape.size() != full_shape.size()) {
      return;  // not partitioned
    }
    for (int64_t dim : full_shape) slice.shape_and_slice += std::to_string(dim) + " ";
    for (size_t d = 0; d < offset.size(); ++d) {
      slice.shape_and_slice += (d ? ":" : "") + std::to_string(offset[d]) + "," + std::to_string(shape[d]);
    }
    slice.first_row = offset[0];
    const size_t colon = name.rfind(':');
    (*slices)[colon == std::string::npos ? name : name.substr(0, colon)] = std::move(slice);
  });
}

// "init_all_tables:0" -> "init_all_tables": init ops are run as targets.
std::string OpName(const std::string& tensor_name) {
  const size_t colon = tensor_name.rfind(':');
  return colon == std::string::npos ? tensor_name : tensor_name.substr(0, colon);
}

// Calls visit(MetaGraphDef bytes) for each meta graph of a serialized SavedModel until visit returns
// true; returns false when the SavedModel is not a valid protocol buffer.
template <typename Visit>
bool ForEachMetaGraph(std::string_view saved_model, Visit&& visit) {
  Reader r(saved_model);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field != kSavedModelMetaGraphs || wire_type != wire::kLengthDelimited) r.Skip(wire_type);
    else if (visit(r.LengthDelimited())) return true;
  }
  return r.ok();
}

}  // namespace

Status ParseMetaGraph(std::string_view serialized, MetaGraphSpec* spec) {
  std::vector<AssetFile> collected_assets;
  Reader r(serialized);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (wire_type != wire::kLengthDelimited) {
      r.Skip(wire_type);
      continue;
    }
    std::string_view bytes = r.LengthDelimited();
    if (field == kMetaInfoDef) {
      spec->tags = ParseTags(bytes);
    } else if (field == kMetaGraphDef) {
      spec->graph_def = bytes;
    } else if (field == kMetaAssetFileDef) {
      spec->assets.push_back(ParseAsset(bytes));
    } else if (field == kMetaSaverDef) {
      spec->saver = ParseSaver(bytes);
    } else if (field == kMetaSignatureDef) {
      auto [name, signature] = ParseMapEntry(bytes);
      spec->signatures[name] = ParseSignature(signature);
    } else if (field == kMetaCollectionDef) {
      auto [name, collection] = ParseMapEntry(bytes);
      if (name == "table_initializer") spec->table_initializers = ParseNodeList(collection);
      if (name == "variables") ParseSavedSlices(collection, &spec->saved_slices);
      if (name == "saved_model_assets") collected_assets = ParseAssetCollection(collection);
      if ((name == "saved_model_main_op" || name == "legacy_init_op") && spec->init_op.empty()) {
        std::vector<std::string> ops = ParseNodeList(collection);
        if (!ops.empty()) spec->init_op = ops[0];
      }
    }
  }
  if (!r.ok()) return Status::Internal("the SavedModel's MetaGraphDef is not a valid protocol buffer");
  // TensorFlow's loader (saved_model/loader.cc, GetAssetFileDefs): asset_file_def, else the collection.
  if (spec->assets.empty()) spec->assets = std::move(collected_assets);
  auto init_signature = spec->signatures.find(kSavedModelInitOpSignature);
  if (init_signature != spec->signatures.end()) {
    for (const TensorSpec& output : init_signature->second.outputs) {
      if (output.alias == kSavedModelInitOpSignature) spec->init_op = OpName(output.tensor_name);
    }
  }
  return Status::Ok();
}

std::string MissingSignatureMessage(const MetaGraphSpec& meta_graph, const std::string& signature_name,
                                    const std::string& savedmodel_dir) {
  std::string available;
  for (const auto& [name, unused] : meta_graph.signatures) available += (available.empty() ? "'" : ", '") + name + "'";
  return "SavedModel '" + savedmodel_dir + "' has no signature '" + signature_name + "' (it has: " +
         (available.empty() ? "none" : available) + ")";
}

bool SavedModelRestoresVariables(std::string_view saved_model) {
  bool restores = false;
  ForEachMetaGraph(saved_model, [&](std::string_view bytes) {
    Reader meta_graph(bytes);
    uint32_t f, w;
    while (meta_graph.NextField(&f, &w)) {
      if (f == kMetaSaverDef && w == wire::kLengthDelimited) {
        restores = restores || !ParseSaver(meta_graph.LengthDelimited()).restore_op_name.empty();
      } else {
        meta_graph.Skip(w);
      }
    }
    return restores;
  });
  return restores;
}

Status ReadSavedModelMetaGraph(const std::string& savedmodel_dir, const std::vector<std::string>& tags,
                               std::string* file, std::string_view* meta_graph) {
  const std::string path = savedmodel_dir + "/saved_model.pb";
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Internal("cannot read '" + path + "' (a SavedModel in text format is not supported here)");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  *file = bytes.str();
  std::vector<std::string> wanted(tags);
  std::sort(wanted.begin(), wanted.end());
  std::string available;
  bool found = false;
  const bool valid = ForEachMetaGraph(*file, [&](std::string_view candidate) {
    std::vector<std::string> candidate_tags;
    Reader fields(candidate);
    uint32_t f, w;
    while (fields.NextField(&f, &w)) {
      if (f == kMetaInfoDef && w == wire::kLengthDelimited) candidate_tags = ParseTags(fields.LengthDelimited());
      else fields.Skip(w);
    }
    std::sort(candidate_tags.begin(), candidate_tags.end());
    if (candidate_tags == wanted) {
      *meta_graph = candidate;
      return found = true;
    }
    std::string joined;
    for (const std::string& tag : candidate_tags) joined += (joined.empty() ? "" : ",") + tag;
    available += (available.empty() ? "{" : ", {") + joined + "}";
    return false;
  });
  if (found) return Status::Ok();
  if (!valid) return Status::Internal("'" + path + "' is not a valid SavedModel protocol buffer");
  std::string joined;
  for (const std::string& tag : wanted) joined += (joined.empty() ? "" : ",") + tag;
  return Status::Internal("'" + path + "' has no MetaGraphDef tagged {" + joined + "} (it has: " +
                          (available.empty() ? "none" : available) + ")");
}


}  // namespace processor
