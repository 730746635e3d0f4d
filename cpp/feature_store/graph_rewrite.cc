#include "feature_store/graph_rewrite.h"

#include <algorithm>
#include <set>
#include <unordered_set>

#include "common/quote.h"
#include "common/tf_handles.h"
#include "common/wire_format.h"
#include "feature_store/lookup_op.h"
#include "feature_store/node_def_writer.h"

namespace processor {
namespace {

using ImportOptionsPtr = std::unique_ptr<TF_ImportGraphDefOptions, CallDeleter<TF_DeleteImportGraphDefOptions>>;

bool IsVariable(const std::string& type) { return type == "VarHandleOp" || type == "VariableV2" || type == "Variable"; }

std::string TensorName(TF_Output output) {
  const std::string op = TF_OperationName(output.oper);
  return output.index == 0 ? op : op + ":" + std::to_string(output.index);
}

std::vector<TF_Operation*> ControlInputs(TF_Operation* op) {
  std::vector<TF_Operation*> inputs(TF_OperationNumControlInputs(op));
  if (!inputs.empty()) TF_OperationGetControlInputs(op, inputs.data(), static_cast<int>(inputs.size()));
  return inputs;
}

std::vector<TF_Operation*> Consumers(TF_Operation* op) {
  const TF_Output output{op, 0};
  std::vector<TF_Input> inputs(TF_OperationOutputNumConsumers(output));
  if (!inputs.empty()) TF_OperationOutputConsumers(output, inputs.data(), static_cast<int>(inputs.size()));
  std::vector<TF_Operation*> consumers;
  for (const TF_Input& input : inputs) consumers.push_back(input.oper);
  return consumers;
}

int64_t IntAttr(TF_Operation* op, const char* name, int64_t missing) {
  TfStatus status;
  int64_t value = missing;
  TF_OperationGetAttrInt(op, name, &value, status.get());
  return status.ok() ? value : missing;
}

TF_DataType TypeAttr(TF_Operation* op, const char* name) {
  TfStatus status;
  TF_DataType value = TF_FLOAT;
  TF_OperationGetAttrType(op, name, &value, status.get());
  return status.ok() ? value : TF_DataType(0);
}

// The graph rooted at the signature's outputs, with control dependencies.
std::unordered_set<TF_Operation*> FanIn(TF_Graph* graph, const std::vector<std::string>& output_ops, Status* status) {
  std::unordered_set<TF_Operation*> seen;
  std::vector<TF_Operation*> pending;
  for (const std::string& name : output_ops) {
    TF_Operation* op = TF_GraphOperationByName(graph, name.c_str());
    if (!op) {
      *status = Status::Internal("the graph has no op " + Quote(name) + " (a signature output)");
      return seen;
    }
    if (seen.insert(op).second) pending.push_back(op);
  }
  while (!pending.empty()) {
    TF_Operation* op = pending.back();
    pending.pop_back();
    std::vector<TF_Operation*> inputs = ControlInputs(op);
    for (int i = 0; i < TF_OperationNumInputs(op); ++i) inputs.push_back(TF_OperationInput(TF_Input{op, i}).oper);
    for (TF_Operation* input : inputs) {
      if (seen.insert(input).second) pending.push_back(input);
    }
  }
  return seen;
}

// Is `op` a row gather of `params` (axis 0, no batch dims, float rows)? Fills `site` when it is.
bool AsGather(TF_Operation* op, TF_Operation* params, GatherSite* site, std::string* why) {
  const std::string type = TF_OperationOpType(op);
  const bool resource = type == "ResourceGather";
  if (!resource && type != "GatherV2" && type != "Gather") {
    *why = "it is read by " + Quote(TF_OperationName(op)) + " (" + type + "), not only gathered by id";
    return false;
  }
  if (TF_OperationInput(TF_Input{op, 0}).oper != params) {
    *why = Quote(TF_OperationName(op)) + " gathers from it by its ids input";
    return false;
  }
  if (IntAttr(op, "batch_dims", 0) != 0) {
    *why = Quote(TF_OperationName(op)) + " gathers with batch_dims";
    return false;
  }
  if (TypeAttr(op, resource ? "dtype" : "Tparams") != TF_FLOAT) {
    *why = "its rows are not float32";
    return false;
  }
  if (type == "GatherV2") {
    TF_Operation* axis = TF_OperationInput(TF_Input{op, 2}).oper;
    TfStatus status;
    TF_Tensor* raw = nullptr;
    if (std::string(TF_OperationOpType(axis)) == "Const") TF_OperationGetAttrTensor(axis, "value", &raw, status.get());
    TensorPtr value(raw);
    bool axis_zero = value && TF_TensorElementCount(value.get()) == 1;
    if (axis_zero) {
      axis_zero = TF_TensorType(value.get()) == TF_INT64 ? *static_cast<int64_t*>(TF_TensorData(value.get())) == 0
                                                          : *static_cast<int32_t*>(TF_TensorData(value.get())) == 0;
    }
    if (!axis_zero) {
      *why = Quote(TF_OperationName(op)) + " gathers along an axis other than a constant 0";
      return false;
    }
  }
  site->node = TF_OperationName(op);
  site->ids = TensorName(TF_OperationInput(TF_Input{op, 1}));
  for (TF_Operation* control : ControlInputs(op)) site->control_inputs.push_back(std::string("^") + TF_OperationName(control));
  site->ids_dtype = TypeAttr(op, "Tindices");
  return true;
}

// The gathers of `source` (a variable, or a whole read of one) on the serving path, or why it is read
// otherwise. Reads (ReadVariableOp, Identity: `var/read`, read_value()) are followed.
bool FindGathers(TF_Operation* source, const std::unordered_set<TF_Operation*>& serving,
                 const std::unordered_set<TF_Operation*>& outputs, std::vector<GatherSite>* gathers, std::string* why) {
  if (outputs.count(source)) {  // the variable, or a read of it, is a signature's output: read whole
    *why = "a signature outputs it whole (" + Quote(TF_OperationName(source)) + ")";
    return false;
  }
  for (TF_Operation* consumer : Consumers(source)) {
    if (!serving.count(consumer)) continue;  // initializers, savers, optimizers
    const std::string type = TF_OperationOpType(consumer);
    if (type == "ReadVariableOp" || type == "Identity") {
      if (!FindGathers(consumer, serving, outputs, gathers, why)) return false;
      continue;
    }
    GatherSite site;
    if (!AsGather(consumer, source, &site, why)) return false;
    gathers->push_back(std::move(site));
  }
  return true;
}

}  // namespace

Status PlanRewrite(std::string_view graph_def, const std::vector<std::string>& output_ops,
                   const EmbeddingSelection& selection, RewritePlan* plan) {
  GraphPtr graph(TF_NewGraph());
  BufferPtr buffer(TF_NewBufferFromString(graph_def.data(), graph_def.size()));
  ImportOptionsPtr options(TF_NewImportGraphDefOptions());
  TfStatus status;
  TF_GraphImportGraphDef(graph.get(), buffer.get(), options.get(), status.get());
  if (!status.ok()) return Status::Internal("cannot import the SavedModel's graph: " + status.message());
  Status fan_in_status;
  const std::unordered_set<TF_Operation*> serving = FanIn(graph.get(), output_ops, &fan_in_status);
  PROCESSOR_RETURN_IF_ERROR(fan_in_status);
  std::unordered_set<TF_Operation*> outputs;
  for (const std::string& name : output_ops) outputs.insert(TF_GraphOperationByName(graph.get(), name.c_str()));

  std::set<std::string> named(selection.names.begin(), selection.names.end());
  named.insert(selection.keyed_by_id.begin(), selection.keyed_by_id.end());
  for (const std::string& name : named) {
    TF_Operation* op = TF_GraphOperationByName(graph.get(), name.c_str());
    if (!op || !IsVariable(TF_OperationOpType(op))) return Status::InvalidArgument("embedding_names: the graph has no variable " + Quote(name));
    if (!serving.count(op)) return Status::InvalidArgument("embedding_names: the signature does not read variable " + Quote(name));
  }
  size_t position = 0;
  while (TF_Operation* op = TF_GraphNextOperation(graph.get(), &position)) {
    if (!serving.count(op) || !IsVariable(TF_OperationOpType(op))) continue;
    const std::string name = TF_OperationName(op);
    EmbeddingVariable embedding;
    embedding.name = name;
    std::string why;
    TF_AttrMetadata shape_meta = TF_OperationGetAttrMetadata(op, "shape", status.get());
    bool table = status.ok() && shape_meta.total_size == 2;
    if (table) {
      int64_t shape[2];
      TF_OperationGetAttrShape(op, "shape", shape, 2, status.get());
      embedding.rows = shape[0];
      embedding.dim = shape[1];
      embedding.keyed_by_id = selection.keyed_by_id.count(name) > 0;
      table = status.ok() && (shape[0] > 0 || embedding.keyed_by_id) && shape[1] > 0;
    }
    if (!table) why = "it is not a 2-D variable of known shape";
    bool gathered = table && FindGathers(op, serving, outputs, &embedding.gathers, &why);
    if (gathered && embedding.gathers.empty()) {
      why = "the signature does not gather from it";
      gathered = false;
    }
    const bool chosen = named.count(name) || (selection.min_rows > 0 && embedding.rows >= selection.min_rows);
    if (named.count(name) && !gathered) {
      return Status::InvalidArgument("embedding_names: variable " + Quote(name) + " cannot be served from the feature store: " + why);
    }
    if (chosen && gathered) {
      plan->embeddings.push_back(std::move(embedding));
      continue;
    }
    plan->dense_variables.push_back(name);
    if (!gathered) plan->not_gathered[name] = why;
  }
  if (plan->embeddings.empty()) {
    return Status::InvalidArgument("no embedding to serve: embedding_names is empty and no variable the "
                                   "signature only gathers from has embedding_min_rows (" +
                                   std::to_string(selection.min_rows) + ") rows");
  }
  return Status::Ok();
}

namespace {

// A Const node holding `row` ([dim] float32).
std::string DefaultRowNode(const std::string& name, const std::vector<float>& row) {
  wire::StringWriter dim, shape, tensor, value, node;
  dim.Varint(1, row.size());
  shape.Bytes(2, dim.str());
  tensor.Varint(1, TF_FLOAT);
  tensor.Bytes(2, shape.str());
  tensor.Bytes(4, std::string_view(reinterpret_cast<const char*>(row.data()), row.size() * sizeof(float)));
  value.Bytes(8, tensor.str());
  node.Bytes(1, name);
  node.Bytes(2, "Const");
  node.Bytes(5, node_def::AttrEntry("dtype", node_def::TypeAttr(TF_FLOAT)));
  node.Bytes(5, node_def::AttrEntry("value", value.str()));
  return node.str();
}

std::string LookupNode(const GatherSite& site, const std::string& default_row, const std::string& table_key) {
  wire::StringWriter node;
  node.Bytes(1, site.node);
  node.Bytes(2, kEmbeddingLookupOp);
  node.Bytes(3, site.ids);
  node.Bytes(3, default_row);
  for (const std::string& control : site.control_inputs) node.Bytes(3, control);
  node.Bytes(5, node_def::AttrEntry("Tindices", node_def::TypeAttr(site.ids_dtype)));
  node.Bytes(5, node_def::AttrEntry("table", node_def::StringAttr(table_key)));
  return node.str();
}

std::string NodeName(std::string_view node_def) {
  wire::Reader r(node_def);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field == 1 && wire_type == wire::kLengthDelimited) return std::string(r.LengthDelimited());
    r.Skip(wire_type);
  }
  return {};
}

}  // namespace

Status RewriteGraph(std::string_view graph_def, const RewritePlan& plan,
                    const std::map<std::string, std::string>& table_keys, float default_value, std::string* rewritten) {
  std::map<std::string, std::string> replacements;  // gather node -> lookup NodeDef
  wire::StringWriter out;
  for (const EmbeddingVariable& embedding : plan.embeddings) {
    auto key = table_keys.find(embedding.name);
    if (key == table_keys.end()) return Status::Internal("no table for embedding " + Quote(embedding.name));
    const std::string default_row = embedding.name + "/processor_default_row";
    out.Bytes(1, DefaultRowNode(default_row, std::vector<float>(embedding.dim, default_value)));
    for (const GatherSite& site : embedding.gathers) {
      replacements[site.node] = LookupNode(site, site.default_input.empty() ? default_row : site.default_input,
                                           key->second);
    }
  }
  wire::Reader r(graph_def);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (wire_type == wire::kVarint) {
      out.Varint(field, r.Varint());
    } else if (wire_type == wire::kLengthDelimited) {
      std::string_view bytes = r.LengthDelimited();
      auto replacement = field == 1 ? replacements.find(NodeName(bytes)) : replacements.end();
      out.Bytes(field, replacement == replacements.end() ? bytes : std::string_view(replacement->second));
    } else {
      return Status::Internal("the SavedModel's GraphDef has an unexpected field " + std::to_string(field));
    }
  }
  if (!r.ok()) return Status::Internal("the SavedModel's GraphDef is not a valid protocol buffer");
  *rewritten = out.str();
  return Status::Ok();
}

}  // namespace processor
