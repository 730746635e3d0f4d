#include "model/graph_builder.h"

#include <tensorflow/c/tf_tstring.h>

#include "common/tf_handles.h"

namespace processor {
namespace {

Status Finish(TF_OperationDescription* description, const char* type, TF_Operation** op) {
  TfStatus status;
  *op = TF_FinishOperation(description, status.get());
  if (!status.ok()) return Status::Internal(std::string("cannot add a ") + type + " op to the graph: " + status.message());
  return Status::Ok();
}

}  // namespace

std::string GraphBuilder::NextName(const char* type) {
  return scope_ + "/" + type + "_" + std::to_string(counter_++);
}

Status GraphBuilder::Placeholder(TF_DataType dtype, TF_Output* output) {
  TF_OperationDescription* description = TF_NewOperation(graph_, "Placeholder", NextName("Placeholder").c_str());
  TF_SetAttrType(description, "dtype", dtype);
  TF_Operation* op = nullptr;
  PROCESSOR_RETURN_IF_ERROR(Finish(description, "Placeholder", &op));
  *output = TF_Output{op, 0};
  return Status::Ok();
}

Status GraphBuilder::StringVector(const std::vector<std::string>& values, TF_Output* output) {
  const int64_t size = static_cast<int64_t>(values.size());
  TensorPtr tensor(TF_AllocateTensor(TF_STRING, &size, 1, values.size() * sizeof(TF_TString)));
  TF_TString* strings = static_cast<TF_TString*>(TF_TensorData(tensor.get()));
  for (size_t i = 0; i < values.size(); ++i) {
    TF_TString_Init(&strings[i]);
    TF_TString_Copy(&strings[i], values[i].data(), values[i].size());
  }
  TF_OperationDescription* description = TF_NewOperation(graph_, "Const", NextName("Const").c_str());
  TF_SetAttrType(description, "dtype", TF_STRING);
  TfStatus status;
  TF_SetAttrTensor(description, "value", tensor.get(), status.get());
  if (!status.ok()) return Status::Internal("cannot set a Const value: " + status.message());
  TF_Operation* op = nullptr;
  PROCESSOR_RETURN_IF_ERROR(Finish(description, "Const", &op));
  *output = TF_Output{op, 0};
  return Status::Ok();
}

Status GraphBuilder::RestoreV2(TF_Output prefix, TF_Output names, TF_Output slices,
                               const std::vector<TF_DataType>& dtypes, TF_Operation** restore) {
  TF_OperationDescription* description = TF_NewOperation(graph_, "RestoreV2", NextName("RestoreV2").c_str());
  TF_AddInput(description, prefix);
  TF_AddInput(description, names);
  TF_AddInput(description, slices);
  TF_SetAttrTypeList(description, "dtypes", dtypes.data(), static_cast<int>(dtypes.size()));
  return Finish(description, "RestoreV2", restore);
}

Status GraphBuilder::Op(const char* type, const std::vector<TF_Output>& inputs, TF_Operation** op) {
  TF_OperationDescription* description = TF_NewOperation(graph_, type, NextName(type).c_str());
  for (const TF_Output& input : inputs) TF_AddInput(description, input);
  return Finish(description, type, op);
}

}  // namespace processor
