// Adds operations to a loaded graph through the TF C API (the session picks them up at its next run).
#pragma once

#include <tensorflow/c/c_api.h>

#include <string>
#include <vector>

#include "common/status.h"

namespace processor {

class GraphBuilder {
 public:
  // Names are `scope`/<counter>: unique, and recognisable in timelines.
  GraphBuilder(TF_Graph* graph, std::string scope) : graph_(graph), scope_(std::move(scope)) {}

  Status Placeholder(TF_DataType dtype, TF_Output* output);
  Status StringVector(const std::vector<std::string>& values, TF_Output* output);
  // RestoreV2: reads `dtypes.size()` tensors named by `names` from the checkpoint at `prefix`.
  Status RestoreV2(TF_Output prefix, TF_Output names, TF_Output slices, const std::vector<TF_DataType>& dtypes,
                   TF_Operation** restore);
  // An op whose attributes all follow from its inputs (ResourceScatterUpdate, ScatterUpdate, Assign...).
  Status Op(const char* type, const std::vector<TF_Output>& inputs, TF_Operation** op);

 private:
  std::string NextName(const char* type);

  TF_Graph* graph_;
  std::string scope_;
  int counter_ = 0;
};

}  // namespace processor
