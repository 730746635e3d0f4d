#include "model/checkpoint_fit.h"

#include <unordered_map>

#include "common/dtypes.h"
#include "common/quote.h"
#include "common/shape_string.h"

namespace processor {

Status CheckCheckpointFits(const std::vector<VariableSpec>& graph, const std::vector<SavedTensor>& saved) {
  std::unordered_map<std::string_view, const SavedTensor*> by_name;
  for (const SavedTensor& tensor : saved) by_name.emplace(tensor.name, &tensor);
  for (const VariableSpec& variable : graph) {
    auto found = by_name.find(variable.name);
    if (found == by_name.end()) continue;
    const SavedTensor& tensor = *found->second;
    if (tensor.dtype != variable.dtype) {
      return Status::InvalidArgument("variable " + Quote(variable.name) + " has dtype " + DataTypeName(tensor.dtype) +
                                     " in the checkpoint but " + DataTypeName(variable.dtype) +
                                     " in the graph (a checkpoint of another graph?)");
    }
    if (!variable.known_rank) continue;
    bool fits = variable.shape.size() == tensor.shape.size();
    for (size_t i = 0; fits && i < variable.shape.size(); ++i) {
      fits = variable.shape[i] < 0 || variable.shape[i] == tensor.shape[i];
    }
    if (!fits) {
      return Status::InvalidArgument("variable " + Quote(variable.name) + " has shape " + ShapeString(tensor.shape) +
                                     " in the checkpoint but " + ShapeString(variable.shape) +
                                     " in the graph (a checkpoint of another graph?)");
    }
  }
  return Status::Ok();
}

}  // namespace processor
