// DeltaApplier: applies incremental checkpoints to a live servable.
//
// An incremental checkpoint holds, for a variable V updated by rows, `V-sparse_incr_keys` (row ids) and
// `V-sparse_incr_values` ([n, ...]); for a variable saved whole, `V` itself. Applying one reads only those
// tensors (outside any lock), checks them against the variables, and then writes every variable in one
// session run while requests wait on the servable's lock: a request sees the model before the delta or
// after it, never in between. The ops are added to the graph once per variable and reused.
#pragma once

#include <tensorflow/c/c_api.h>

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/rw_lock.h"
#include "common/status.h"
#include "common/tf_handles.h"
#include "model/graph_builder.h"
#include "model/meta_graph.h"

namespace processor {

struct DeltaVariable {
  std::string name;                  // the variable's op name in the graph
  bool sparse = true;                // rows (keys + values) or the whole variable
  TF_DataType key_dtype = TF_INT64;  // of the keys, when sparse
  // A whole part of a partitioned variable is saved as a slice of its full variable (SavedSlice).
  std::string saved_name;            // empty: `name`
  std::string shape_and_slice;       // empty: the whole tensor
};

struct VariableSpec {
  std::string name;
  TF_DataType dtype = TF_FLOAT;
  bool known_rank = false;     // false: the graph does not say
  std::vector<int64_t> shape;  // -1 for an unknown dimension
  std::string saved_name;      // a part of a partitioned variable: the full variable checkpoints hold; else empty
};

// A variable restored whole that is a part of a partitioned variable is read from its slice of the
// variable checkpoints save (in full versions and in deltas, as tf.train.Saver and DeepRec write it):
// sets `variable`'s saved name and slice from `slices` (MetaGraphSpec::saved_slices) when it is one.
void ReadFromSavedSlice(const std::map<std::string, SavedSlice>& slices, DeltaVariable* variable);

// A sparse delta's rows whose id is outside [0, limit) are skipped, as DeepRec's restore does: *keys
// and *rows are replaced by the rows kept, and a warning counts the others for `what` (the variable or
// table) of the delta at `prefix`. String rows out of range are refused instead.
Status DropRowsOutside(const std::string& prefix, const std::string& what, int64_t limit, TensorPtr* keys,
                       TensorPtr* rows);

class DeltaApplier {
 public:
  // `run_options` (borrowed) select the update thread pool for the delta's runs.
  DeltaApplier(TF_Graph* graph, TF_Session* session, const TF_Buffer* run_options, WriterPreferringLock* serving_lock)
      : graph_(graph), session_(session), run_options_(run_options), serving_lock_(serving_lock),
        builder_(graph, "processor_delta") {}

  // `also_under_lock` (optional) writes what lives outside the session (feature-store tables) in the
  // same exclusive section, after the variables; it must not fail once the checks are done.
  Status Apply(const std::string& prefix, const std::vector<DeltaVariable>& variables,
               const std::function<Status()>& also_under_lock = nullptr);

  // Reads tensors (or slices of them: `slices`, empty for whole tensors) from a checkpoint through the
  // session; nothing is assigned.
  Status Read(const std::string& prefix, const std::vector<std::string>& names, const std::vector<std::string>& slices,
              const std::vector<TF_DataType>& dtypes, std::vector<TensorPtr>* tensors);

  // The graph's variables (VarHandleOp, VariableV2) with their declared dtype and shape.
  std::vector<VariableSpec> Variables();

 private:
  struct Variable {
    TF_Operation* op = nullptr;
    bool resource = false;
    TF_DataType dtype = TF_FLOAT;
    bool known_rank = false;
    std::vector<int64_t> shape;
  };
  struct Update {
    TF_Output keys{};     // sparse only
    TF_Output values{};
    TF_Operation* op = nullptr;
  };

  Status Describe(const std::string& name, Variable* variable);
  Status ReadLocked(const std::string& prefix, const std::vector<std::string>& names,
                    const std::vector<std::string>& slices, const std::vector<TF_DataType>& dtypes,
                    std::vector<TensorPtr>* tensors, const char* what);
  Status RestoreOp(const std::vector<std::string>& names, const std::vector<std::string>& slices,
                   const std::vector<TF_DataType>& dtypes, TF_Operation** restore);
  Status UpdateOp(const DeltaVariable& delta, const Variable& variable, Update** update);

  TF_Graph* graph_;
  TF_Session* session_;
  const TF_Buffer* run_options_;
  WriterPreferringLock* serving_lock_;
  std::mutex mu_;  // one delta at a time; guards what follows
  GraphBuilder builder_;
  TF_Output prefix_{};
  std::map<std::string, TF_Operation*> restores_;  // by tensor names and dtypes
  std::map<std::string, Update> updates_;          // by variable, kind and key dtype
};

}  // namespace processor
