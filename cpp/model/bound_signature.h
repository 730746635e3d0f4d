// BoundSignature: one SignatureDef of a loaded version, bound to its graph: each input's and output's
// spec and port, indexed by the names a request may use (alias or tensor name), and its JSON
// description. A version binds every SignatureDef of its MetaGraphDef (TF Serving serves them all); the
// configured signature_name is its main one (Servable::signature()).
#pragma once

#include <tensorflow/c/c_api.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/meta_graph.h"
#include "model/tensor_name_index.h"

namespace processor {

struct BoundTensor {
  TensorSpec spec;
  TF_Output port;
};

class BoundSignature {
 public:
  // Resolves every tensor `spec` names in `graph`. Made once and never moved: the indexes point into
  // the specs.
  static Status Bind(TF_Graph* graph, const std::string& name, const SignatureSpec& spec,
                     std::unique_ptr<const BoundSignature>* bound);
  BoundSignature(const BoundSignature&) = delete;
  BoundSignature& operator=(const BoundSignature&) = delete;

  const std::string& name() const { return name_; }
  const std::string& method_name() const { return method_name_; }
  const std::vector<BoundTensor>& inputs() const { return inputs_; }
  const std::vector<BoundTensor>& outputs() const { return outputs_; }
  // Index into inputs()/outputs() of an alias or tensor name; -1 if there is none.
  int FindInput(std::string_view name) const { return input_names_.Find(name); }
  int FindOutput(std::string_view name) const { return output_names_.Find(name); }
  // {"signature_name", "method_name", "inputs", "outputs"}: DeepRec's description of a signature
  // (model_instance.cc GenerateJsonSignatureFormat) with this project's fields beside its own.
  const std::string& json() const { return json_; }

 private:
  BoundSignature() = default;

  std::string name_;
  std::string method_name_;
  std::vector<BoundTensor> inputs_;
  std::vector<BoundTensor> outputs_;
  TensorNameIndex input_names_, output_names_;
  std::string json_;
};

}  // namespace processor
