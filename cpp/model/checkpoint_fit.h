// Whether a checkpoint fits a loaded graph, checked before anything is restored from it: TensorFlow's
// restore does not check the shapes of resource variables, so a checkpoint of another graph would load
// and then fail (or, worse, answer from misshaped rows) on every request.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/delta_applier.h"

namespace processor {

// A tensor of a checkpoint as its index holds it (the control plane reads the index).
struct SavedTensor {
  std::string name;
  int dtype = 0;  // tensorflow.DataType
  std::vector<int64_t> shape;
};

// InvalidArgument naming the first graph variable whose tensor in `saved` has another dtype or shape
// (an unknown dimension of the graph's matches any). Variables the checkpoint does not hold under their
// own name (parts of partitioned variables, variables the saver leaves out) are TensorFlow's restore's
// to judge.
Status CheckCheckpointFits(const std::vector<VariableSpec>& graph, const std::vector<SavedTensor>& saved);

}  // namespace processor
