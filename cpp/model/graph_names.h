// Tensor names ("op:index") and the graph ports they name.
#pragma once

#include <tensorflow/c/c_api.h>

#include <string>

#include "common/status.h"

namespace processor {

// "op:1" -> ("op", 1); "op" -> ("op", 0). False when the name is not of that form.
bool ParseTensorName(const std::string& name, std::string* op, int* index);

// The output of `graph` a tensor name names; Internal when there is none.
Status ResolvePort(TF_Graph* graph, const std::string& tensor_name, TF_Output* port);

}  // namespace processor
