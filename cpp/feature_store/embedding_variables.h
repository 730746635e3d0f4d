// DeepRec's EmbeddingVariables on stock TensorFlow. A SavedModel trained with DeepRec holds ops stock
// TensorFlow lacks (tensorflow/core/ops/kv_variable_ops.cc in DeepRec): a KvVarHandleOp per
// EmbeddingVariable, KvResourceGather(V1) reads of it, InitializeKvVariableOp/V2Op, KvResourceImportV2/V3
// restores, SaveV2 nodes saving EVs, IncrSave/IncrRestore of incremental saving. Before the graph is
// imported, this pass rewrites it into one stock TensorFlow can load and the feature store serves:
//   - each KvVarHandleOp becomes a VarHandleOp of shape [-1, dim], and each gather of it a
//     ResourceGather, which the feature store's rewrite then turns into a lookup of a hash table
//     keyed by id (loaded from the checkpoint's <name>-keys and <name>-values);
//   - every other node of an op stock TensorFlow does not register, and every node that reads an EV
//     handle (initializers, restores, saves) or depends on such a node by data, is dropped, and
//     control dependencies on dropped nodes are removed;
//   - an EV's default values (what ids it lacks read: row id % default_value_dim of its initializer's
//     value, as DeepRec's KvResourceGather reads them) are found as the initializer's tensor, which
//     stays in the graph to be run once at load; a gather with is_use_default_value_tensor reads row i
//     of its default_value input for its i-th id instead, and that input is kept for its lookup.
#pragma once

#include <tensorflow/c/c_api.h>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace processor {

struct DeepRecEmbedding {
  std::string name;                 // the KvVarHandleOp's
  std::string saved_name;           // its shared_name (else name): checkpoints hold <saved_name>-keys, -values, ...
  int64_t dim = 0;
  TF_DataType key_dtype = TF_INT64;
  std::string default_value;        // the initializer's value tensor ("op:index"), [default_value_dim, dim]
  int64_t default_value_dim = 4096;
  // Gathers that take their ids' defaults from a tensor (is_use_default_value_tensor): gather -> tensor.
  std::map<std::string, std::string> default_value_tensors;
};

// Whether a serialized GraphDef (or a MetaGraphDef, or a SavedModel holding it) has a node of DeepRec's
// KvVarHandleOp: a scan of the bytes for that op field, cheap enough for every load.
bool MentionsEmbeddingVariables(std::string_view bytes);

// Rewrites `graph_def` as the header says. `evs` gets the EmbeddingVariables the rewritten graph's
// gathers read (primary variables, not optimizer slots). InvalidArgument when one of `outputs` (the
// signature's output ops) would be dropped, naming the node and op it needs that stock TensorFlow
// cannot run (a DeepRec op other than the EV ops served here, such as a fused embedding lookup).
Status RewriteEmbeddingVariables(std::string_view graph_def, const std::vector<std::string>& outputs,
                                 std::string* rewritten, std::vector<DeepRecEmbedding>* evs);

}  // namespace processor
