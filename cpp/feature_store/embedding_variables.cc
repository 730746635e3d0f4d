#include "feature_store/embedding_variables.h"

#include <cstring>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "common/logging.h"
#include "common/quote.h"
#include "common/tensor_shape_proto.h"
#include "common/tf_handles.h"
#include "common/wire_format.h"
#include "feature_store/node_def_writer.h"

namespace processor {
namespace {

// NodeDef (tensorflow/core/framework/node_def.proto) and AttrValue (attr_value.proto) field numbers.
using node_def::AttrEntry;
using node_def::kAttrB;
using node_def::kAttrI;
using node_def::kAttrS;
using node_def::kAttrShape;
using node_def::kAttrType;
constexpr uint32_t kNodeName = node_def::kName, kNodeOp = node_def::kOp, kNodeInput = node_def::kInput,
                   kNodeAttr = node_def::kAttr;
constexpr uint32_t kGraphNode = 1, kGraphLibrary = 2;

struct Node {
  std::string_view bytes;
  std::string name, op;
  std::vector<std::string> inputs;  // as written: "op", "op:1", "^op"
  std::map<std::string, std::string_view> attrs;  // serialized AttrValue
};

std::string ProducerOf(const std::string& input) {
  std::string name = input[0] == '^' ? input.substr(1) : input;
  const size_t colon = name.find(':');
  return colon == std::string::npos ? name : name.substr(0, colon);
}

bool ParseNode(std::string_view bytes, Node* node) {
  node->bytes = bytes;
  wire::Reader r(bytes);
  uint32_t field, type;
  while (r.NextField(&field, &type)) {
    if (type != wire::kLengthDelimited) {
      r.Skip(type);
      continue;
    }
    const std::string_view value = r.LengthDelimited();
    if (field == kNodeName) node->name = value;
    else if (field == kNodeOp) node->op = value;
    else if (field == kNodeInput) node->inputs.emplace_back(value);
    else if (field == kNodeAttr) {
      wire::Reader entry(value);
      std::string key;
      std::string_view attr;
      while (entry.NextField(&field, &type)) {
        if (field == 1 && type == wire::kLengthDelimited) key = entry.LengthDelimited();
        else if (field == 2 && type == wire::kLengthDelimited) attr = entry.LengthDelimited();
        else entry.Skip(type);
      }
      node->attrs[key] = attr;
    }
  }
  return r.ok() && !node->name.empty();
}

// The value of an AttrValue's `field` (a varint), or `missing`.
int64_t AttrVarint(const Node& node, const std::string& key, uint32_t wanted, int64_t missing) {
  auto it = node.attrs.find(key);
  if (it == node.attrs.end()) return missing;
  wire::Reader r(it->second);
  uint32_t field, type;
  while (r.NextField(&field, &type)) {
    if (field == wanted && type == wire::kVarint) return static_cast<int64_t>(r.Varint());
    r.Skip(type);
  }
  return missing;
}

// A string attr's value, or "".
std::string AttrString(const Node& node, const std::string& key) {
  auto it = node.attrs.find(key);
  if (it == node.attrs.end()) return {};
  wire::Reader r(it->second);
  uint32_t field, type;
  while (r.NextField(&field, &type)) {
    if (field == kAttrS && type == wire::kLengthDelimited) return std::string(r.LengthDelimited());
    r.Skip(type);
  }
  return {};
}

// The dims of a shape attr (-1 for unknown ones); empty when absent or of unknown rank.
std::vector<int64_t> AttrShape(const Node& node, const std::string& key) {
  std::vector<int64_t> dims;
  auto it = node.attrs.find(key);
  if (it == node.attrs.end()) return dims;
  wire::Reader r(it->second);
  uint32_t field, type;
  while (r.NextField(&field, &type)) {
    if (field != kAttrShape || type != wire::kLengthDelimited) {
      r.Skip(type);
      continue;
    }
    ReadTensorShape(r.LengthDelimited(), &dims);
  }
  return dims;
}

std::string CopiedAttr(const Node& node, const std::string& key) {
  auto it = node.attrs.find(key);
  return it == node.attrs.end() ? std::string() : std::string(it->second);
}

// The VarHandleOp standing for an EV: its rows are the feature store's, so only [-1, dim] is known.
std::string VariableNode(const Node& handle, int64_t dim) {
  wire::StringWriter node;
  node.Bytes(kNodeName, handle.name);
  node.Bytes(kNodeOp, "VarHandleOp");
  node.Bytes(kNodeAttr, AttrEntry("dtype", CopiedAttr(handle, "dtype")));
  node.Bytes(kNodeAttr, AttrEntry("shape", node_def::ShapeAttr({-1, dim})));
  for (const char* key : {"container", "shared_name"}) {
    if (handle.attrs.count(key)) node.Bytes(kNodeAttr, AttrEntry(key, CopiedAttr(handle, key)));
  }
  return node.str();
}

// ResourceGather(handle, ids) in place of KvResourceGather(handle, ids, default_value[, counts]).
std::string GatherNode(const Node& gather, const std::string& handle) {
  wire::StringWriter node;
  node.Bytes(kNodeName, gather.name);
  node.Bytes(kNodeOp, "ResourceGather");
  node.Bytes(kNodeInput, handle);
  node.Bytes(kNodeInput, gather.inputs.at(1));
  for (const std::string& input : gather.inputs) {
    if (input[0] == '^') node.Bytes(kNodeInput, input);
  }
  node.Bytes(kNodeAttr, AttrEntry("dtype", CopiedAttr(gather, "dtype")));
  node.Bytes(kNodeAttr, AttrEntry("Tindices", CopiedAttr(gather, "Tkeys")));
  node.Bytes(kNodeAttr, AttrEntry("batch_dims", node_def::IntAttr(0)));
  node.Bytes(kNodeAttr, AttrEntry("validate_indices", node_def::BoolAttr(true)));
  return node.str();
}

// The node without its control inputs on `dropped` nodes.
std::string WithoutDroppedControls(const Node& node, const std::unordered_set<std::string>& dropped) {
  wire::StringWriter out;
  wire::Reader r(node.bytes);
  uint32_t field, type;
  while (r.NextField(&field, &type)) {
    if (type == wire::kLengthDelimited) {
      const std::string_view value = r.LengthDelimited();
      if (field == kNodeInput && !value.empty() && value[0] == '^' && dropped.count(std::string(value.substr(1)))) {
        continue;
      }
      out.Bytes(field, value);
    } else if (type == wire::kVarint) {
      out.Varint(field, r.Varint());
    } else {
      r.Skip(type);  // NodeDef has no fixed-width fields
    }
  }
  return out.str();
}

// The ops this TensorFlow registers.
const std::unordered_set<std::string>& RegisteredOps() {
  static const std::unordered_set<std::string>* ops = [] {
    auto* names = new std::unordered_set<std::string>();
    BufferPtr list(TF_GetAllOpList());
    wire::Reader r(list->data, list->length);
    uint32_t field, type;
    while (r.NextField(&field, &type)) {
      if (field != 1 || type != wire::kLengthDelimited) {
        r.Skip(type);
        continue;
      }
      wire::Reader op(r.LengthDelimited());
      while (op.NextField(&field, &type)) {
        if (field == 1 && type == wire::kLengthDelimited) {
          names->emplace(op.LengthDelimited());
          break;
        }
        op.Skip(type);
      }
    }
    return names;
  }();
  return *ops;
}

// The names of the functions a GraphDef's library defines (nodes may call them as ops).
void AddLibraryFunctions(std::string_view library, std::unordered_set<std::string>* names) {
  wire::Reader r(library);
  uint32_t field, type;
  while (r.NextField(&field, &type)) {
    if (field != 1 || type != wire::kLengthDelimited) {  // FunctionDefLibrary.function
      r.Skip(type);
      continue;
    }
    wire::Reader function(r.LengthDelimited());
    while (function.NextField(&field, &type)) {
      if (field != 1 || type != wire::kLengthDelimited) {  // FunctionDef.signature (an OpDef)
        function.Skip(type);
        continue;
      }
      wire::Reader signature(function.LengthDelimited());
      while (signature.NextField(&field, &type)) {
        if (field == 1 && type == wire::kLengthDelimited) names->emplace(signature.LengthDelimited());
        else signature.Skip(type);
      }
    }
  }
}

bool IsGather(const std::string& op) { return op == "KvResourceGather" || op == "KvResourceGatherV1"; }

}  // namespace

bool MentionsEmbeddingVariables(std::string_view bytes) {
  // A NodeDef's op field (2, length-delimited: tag 0x12) holding the 13 bytes "KvVarHandleOp".
  static constexpr std::string_view kOpField("\x12\x0dKvVarHandleOp", 15);
  return bytes.find(kOpField) != std::string_view::npos;
}

Status RewriteEmbeddingVariables(std::string_view graph_def, const std::vector<std::string>& outputs,
                                 std::string* rewritten, std::vector<DeepRecEmbedding>* evs) {
  std::vector<Node> nodes;
  std::unordered_set<std::string> functions;
  wire::Reader r(graph_def);
  uint32_t field, type;
  while (r.NextField(&field, &type)) {
    if (field == kGraphNode && type == wire::kLengthDelimited) {
      nodes.emplace_back();
      if (!ParseNode(r.LengthDelimited(), &nodes.back())) return Status::Internal("the graph has a malformed NodeDef");
    } else if (field == kGraphLibrary && type == wire::kLengthDelimited) {
      AddLibraryFunctions(r.LengthDelimited(), &functions);
    } else {
      r.Skip(type);
    }
  }
  if (!r.ok()) return Status::Internal("the SavedModel's GraphDef is not a valid protocol buffer");

  // The EVs, and the Identity nodes that pass their handles on.
  std::map<std::string, DeepRecEmbedding> found;
  std::unordered_map<std::string, std::string> handle_of;  // node -> the EV whose handle it is
  for (const Node& node : nodes) {
    if (node.op != "KvVarHandleOp") continue;
    const std::vector<int64_t> shape = AttrShape(node, "shape");
    DeepRecEmbedding ev;
    ev.name = node.name;
    ev.saved_name = AttrString(node, "shared_name");  // what DeepRec's saver names its tensors by
    if (ev.saved_name.empty()) ev.saved_name = node.name;
    ev.dim = shape.empty() ? 0 : shape.back();
    ev.key_dtype = static_cast<TF_DataType>(AttrVarint(node, "Tkeys", kAttrType, TF_INT64));
    if (AttrVarint(node, "dtype", kAttrType, TF_FLOAT) != TF_FLOAT || ev.dim <= 0) {
      return Status::InvalidArgument("EmbeddingVariable " + Quote(node.name) + " is not of float rows of a known "
                                     "dimension, which the feature store serves");
    }
    handle_of[node.name] = node.name;
    found[node.name] = ev;
  }
  for (bool grew = true; grew;) {
    grew = false;
    for (const Node& node : nodes) {
      if (node.op != "Identity" || node.inputs.empty() || handle_of.count(node.name)) continue;
      auto source = handle_of.find(ProducerOf(node.inputs[0]));
      if (source != handle_of.end()) {
        handle_of[node.name] = source->second;
        grew = true;
      }
    }
  }

  std::unordered_map<std::string, std::string> replaced;  // node -> its new NodeDef
  std::set<std::string> gathered;
  std::unordered_set<std::string> dropped;
  std::unordered_map<std::string, std::string> why_dropped;  // node -> the node (and op) that took it
  for (const Node& node : nodes) {
    if (node.op == "KvVarHandleOp") {
      replaced[node.name] = VariableNode(node, found[node.name].dim);
      continue;
    }
    if (node.op == "Identity" && handle_of.count(node.name)) continue;
    auto ev = node.inputs.empty() || node.inputs[0][0] == '^' ? handle_of.end()
                                                              : handle_of.find(ProducerOf(node.inputs[0]));
    if (IsGather(node.op) && ev != handle_of.end()) {
      if (AttrVarint(node, "is_use_default_value_tensor", kAttrB, 0) != 0) {
        if (node.inputs.size() < 3 || node.inputs[2][0] == '^') {
          return Status::InvalidArgument("gather " + Quote(node.name) + " has no default_value input");
        }
        found[ev->second].default_value_tensors[node.name] = node.inputs[2];
      }
      replaced[node.name] = GatherNode(node, ev->second);
      gathered.insert(ev->second);
      continue;
    }
    const bool initializer = node.op == "InitializeKvVariableOp" || node.op == "InitializeKvVariableV2Op";
    if (initializer && ev != handle_of.end() && node.inputs.size() >= 3 &&
        ProducerOf(node.inputs[1]) == ProducerOf(node.inputs[0])) {  // a primary EV, not an optimizer's slot
      found[ev->second].default_value = node.inputs[2];
      found[ev->second].default_value_dim = AttrVarint(node, "default_value_dim", kAttrI, 4096);
    }
    bool reads_handle = false;
    for (const std::string& input : node.inputs) reads_handle |= input[0] != '^' && handle_of.count(ProducerOf(input));
    if (reads_handle || (!RegisteredOps().count(node.op) && !functions.count(node.op))) {
      dropped.insert(node.name);
      why_dropped[node.name] = Quote(node.name) + " (" + node.op + ")";
    }
  }
  // What reads a dropped node's output goes too (a save's filename output, a restore's values).
  for (bool grew = true; grew;) {
    grew = false;
    for (const Node& node : nodes) {
      if (dropped.count(node.name) || replaced.count(node.name)) continue;
      for (const std::string& input : node.inputs) {
        if (input[0] != '^' && dropped.count(ProducerOf(input))) {
          dropped.insert(node.name);
          why_dropped[node.name] = why_dropped[ProducerOf(input)];
          grew = true;
          break;
        }
      }
    }
  }

  for (const std::string& output : outputs) {
    if (dropped.count(output)) {
      return Status::InvalidArgument("signature output " + Quote(output) + " needs " + why_dropped[output] +
                                     ", which stock TensorFlow cannot run (of DeepRec's ops, this build serves "
                                     "EmbeddingVariables read by KvResourceGather)");
    }
  }
  wire::StringWriter out;
  wire::Reader copy(graph_def);
  size_t next_node = 0;  // `nodes` holds the graph's nodes parsed above, in this order
  while (copy.NextField(&field, &type)) {
    if (type == wire::kVarint) {
      out.Varint(field, copy.Varint());
      continue;
    }
    if (type != wire::kLengthDelimited) return Status::Internal("the SavedModel's GraphDef has an unexpected field");
    const std::string_view bytes = copy.LengthDelimited();
    if (field != kGraphNode) {
      out.Bytes(field, bytes);
      continue;
    }
    const Node& node = nodes[next_node++];
    if (dropped.count(node.name)) continue;
    auto replacement = replaced.find(node.name);
    if (replacement != replaced.end()) {
      out.Bytes(field, replacement->second);
      continue;
    }
    bool controls_dropped = false;
    for (const std::string& input : node.inputs) controls_dropped |= input[0] == '^' && dropped.count(input.substr(1));
    out.Bytes(field, controls_dropped ? WithoutDroppedControls(node, dropped) : std::string(bytes));
  }
  *rewritten = out.str();
  for (const std::string& name : gathered) {
    const DeepRecEmbedding& ev = found[name];
    if (ev.default_value.empty()) {
      Log(LogLevel::kWarning, "EmbeddingVariable " + Quote(name) + " has no initializer in the graph: ids it lacks "
                                  "read embedding_default_value");
    }
    evs->push_back(ev);
  }
  Log(LogLevel::kInfo, std::to_string(evs->size()) + " DeepRec EmbeddingVariable(s) served from the feature store; " +
                           std::to_string(dropped.size()) + " node(s) stock TensorFlow cannot run dropped");
  return Status::Ok();
}

}  // namespace processor
