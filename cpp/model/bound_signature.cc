#include "model/bound_signature.h"

#include "common/dtypes.h"
#include "common/json_writer.h"
#include "model/graph_names.h"

namespace processor {
namespace {

// DeepRec's entry ({"name": alias, "shape", "type"}: model_instance.cc GenerateJsonSignatureFormat),
// with this project's "alias", "tensor_name" and "dtype" beside it; a shape of unknown rank is [] (as
// DeepRec prints it) with "unknown_rank": true.
void AppendTensorsJson(std::string* out, const std::vector<BoundTensor>& tensors) {
  out->push_back('[');
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorSpec& spec = tensors[i].spec;
    if (i) out->push_back(',');
    out->append("{\"name\":");
    AppendJsonString(out, spec.alias);
    out->append(",\"shape\":[");
    for (size_t d = 0; d < spec.dims.size(); ++d) out->append((d ? "," : "") + std::to_string(spec.dims[d]));
    out->append("],\"type\":");
    AppendJsonString(out, DataTypeName(spec.dtype));
    if (spec.unknown_rank) out->append(",\"unknown_rank\":true");
    out->append(",\"alias\":");
    AppendJsonString(out, spec.alias);
    out->append(",\"tensor_name\":");
    AppendJsonString(out, spec.tensor_name);
    out->append(",\"dtype\":");
    AppendJsonString(out, DataTypeName(spec.dtype));
    out->push_back('}');
  }
  out->push_back(']');
}

Status BindTensors(TF_Graph* graph, const std::vector<TensorSpec>& specs, const char* kind,
                   std::vector<BoundTensor>* bound) {
  for (const TensorSpec& spec : specs) {
    BoundTensor tensor{spec, {}};
    PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(ResolvePort(graph, spec.tensor_name, &tensor.port),
                                           std::string("signature ") + kind + " '" + spec.alias + "'");
    bound->push_back(std::move(tensor));
  }
  return Status::Ok();
}

TensorNameIndex IndexNames(const std::vector<BoundTensor>& tensors) {
  std::vector<std::string_view> aliases, tensor_names;
  for (const BoundTensor& t : tensors) {
    aliases.push_back(t.spec.alias);
    tensor_names.push_back(t.spec.tensor_name);
  }
  return TensorNameIndex(aliases, tensor_names);
}

}  // namespace

Status BoundSignature::Bind(TF_Graph* graph, const std::string& name, const SignatureSpec& spec,
                            std::unique_ptr<const BoundSignature>* bound) {
  std::unique_ptr<BoundSignature> s(new BoundSignature());
  s->name_ = name;
  s->method_name_ = spec.method_name;
  PROCESSOR_RETURN_IF_ERROR(BindTensors(graph, spec.inputs, "input", &s->inputs_));
  PROCESSOR_RETURN_IF_ERROR(BindTensors(graph, spec.outputs, "output", &s->outputs_));
  s->input_names_ = IndexNames(s->inputs_);  // views into the specs, which stay as they are from here on
  s->output_names_ = IndexNames(s->outputs_);
  std::string& json = s->json_;
  json = "{\"signature_name\":";
  AppendJsonString(&json, name);
  json += ",\"method_name\":";
  AppendJsonString(&json, spec.method_name);
  json += ",\"inputs\":";
  AppendTensorsJson(&json, s->inputs_);
  json += ",\"outputs\":";
  AppendTensorsJson(&json, s->outputs_);
  json += "}";
  *bound = std::move(s);
  return Status::Ok();
}

}  // namespace processor
