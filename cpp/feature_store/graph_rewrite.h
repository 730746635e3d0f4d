// The feature store's graph rewrite. Before a SavedModel's graph is loaded, its embedding variables
// (named, or every variable of at least `min_rows` rows the serving path reads only by gathering rows
// by id) are found, and each of their gathers is replaced by a ProcessorEmbeddingLookup reading a table
// outside the session. The variables stay in the graph, never restored: only the dense variables the
// signature reads are.
#pragma once

#include <tensorflow/c/c_api.h>

#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace processor {

struct EmbeddingSelection {
  std::vector<std::string> names;  // these variables, which must be gathered only
  int64_t min_rows = 0;            // and, when > 0, every gathered-only variable with this many rows
  float default_value = 0;         // what ids a table lacks read as
  // Variables served from the store whatever else is selected, keyed by any id and of unknown rows:
  // DeepRec's EmbeddingVariables (feature_store/embedding_variables.h).
  std::set<std::string> keyed_by_id;
};

struct GatherSite {
  std::string node;             // the gather's name, kept by its replacement
  std::string ids;              // its ids input, "op:index"
  std::vector<std::string> control_inputs;
  TF_DataType ids_dtype = TF_INT64;
  std::string default_input;    // a tensor of one default row per id, else the table's default row
};

struct EmbeddingVariable {
  std::string name;
  int64_t rows = 0;
  int64_t dim = 0;
  std::vector<GatherSite> gathers;
  // Where its rows are in a checkpoint: a part of a partitioned variable is rows [first_row,
  // first_row + rows) of `saved_name`, read with `shape_and_slice`.
  std::string saved_name;
  std::string shape_and_slice;
  int64_t first_row = 0;
  // A DeepRec EmbeddingVariable: its table holds the checkpoint's <saved_name>-keys/-values, rows is
  // unknown (-1), and ids it lacks read row (id mod default_value_dim) of `default_value`'s tensor.
  bool keyed_by_id = false;
  TF_DataType key_dtype = TF_INT64;  // of <saved_name>-keys
  std::string default_value;
  int64_t default_value_dim = 0;
};

struct RewritePlan {
  std::vector<EmbeddingVariable> embeddings;
  std::vector<std::string> dense_variables;  // the other variables the signature's outputs depend on
  std::map<std::string, std::string> not_gathered;  // of those, the ones read otherwise than by gathers: how
};

// Finds the embedding variables of `graph_def` for the signature outputs `output_ops`. On failure,
// `plan` holds what was found before it.
Status PlanRewrite(std::string_view graph_def, const std::vector<std::string>& output_ops,
                   const EmbeddingSelection& selection, RewritePlan* plan);

// The GraphDef with each gather of `plan` replaced by a lookup of the table registered under
// `table_keys[variable name]`.
Status RewriteGraph(std::string_view graph_def, const RewritePlan& plan,
                    const std::map<std::string, std::string>& table_keys, float default_value, std::string* rewritten);

}  // namespace processor
