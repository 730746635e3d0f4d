#include "model/graph_names.h"

#include <cstdlib>

namespace processor {

bool ParseTensorName(const std::string& name, std::string* op, int* index) {
  const size_t colon = name.rfind(':');
  if (colon == std::string::npos) {
    *op = name;
    *index = 0;
    return !name.empty();
  }
  *op = name.substr(0, colon);
  char* end = nullptr;
  const long value = std::strtol(name.c_str() + colon + 1, &end, 10);
  *index = static_cast<int>(value);
  return !op->empty() && end && *end == '\0' && value >= 0;
}

Status ResolvePort(TF_Graph* graph, const std::string& tensor_name, TF_Output* port) {
  std::string op_name;
  int index = 0;
  if (!ParseTensorName(tensor_name, &op_name, &index)) return Status::Internal("bad tensor name '" + tensor_name + "'");
  TF_Operation* op = TF_GraphOperationByName(graph, op_name.c_str());
  if (!op || index >= TF_OperationNumOutputs(op)) return Status::Internal("the graph has no tensor '" + tensor_name + "'");
  *port = TF_Output{op, index};
  return Status::Ok();
}

}  // namespace processor
