// What the data plane needs from a MetaGraphDef: signatures, the saver, table initializers.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/dtypes.h"
#include "common/status.h"

namespace processor {

struct TensorSpec {
  std::string alias;        // key in the SignatureDef
  std::string tensor_name;  // "op:index"
  int dtype = 0;            // tensorflow DataType (== ArrayDataType numbering)
  bool unknown_rank = false;
  std::vector<int64_t> dims;  // -1 for unknown
};

// The SignatureDef whose output is the init op (TF2's SavedModels): the loader's, not a request's.
inline constexpr char kSavedModelInitOpSignature[] = "__saved_model_init_op";

struct SignatureSpec {
  std::string method_name;
  std::vector<TensorSpec> inputs;   // sorted by alias
  std::vector<TensorSpec> outputs;  // sorted by alias
};

struct SaverSpec {
  std::string filename_tensor_name;  // feed the checkpoint prefix here...
  std::string restore_op_name;       // ...and run this target
};

struct AssetFile {
  std::string tensor_name;  // a string placeholder the init op reads the path from
  std::string filename;     // under <savedmodel_dir>/assets
};

// Where a partitioned variable's slice is saved: TF checkpoints hold the whole variable under its
// full name, and each part is restored with a shape-and-slice spec.
struct SavedSlice {
  std::string full_name;        // "table"
  std::string shape_and_slice;  // "50 4 0,25:0,4": the full shape, then offset,length per dim
  int64_t first_row = 0;        // offset along dim 0
};

struct MetaGraphSpec {
  std::map<std::string, SignatureSpec> signatures;
  SaverSpec saver;  // empty names when the MetaGraphDef has no saver_def
  std::vector<std::string> table_initializers;  // op names in the "table_initializer" collection
  // What a SavedModel loader runs after restoring: the "__saved_model_init_op" signature's output, or
  // the main_op / legacy_init_op collection's op; empty if none. It is fed `assets`.
  std::string init_op;
  // asset_file_def, or when that is empty the legacy "saved_model_assets" collection (TF1's builder).
  std::vector<AssetFile> assets;
  std::vector<std::string> tags;
  std::string_view graph_def;  // into the serialized MetaGraphDef
  std::map<std::string, SavedSlice> saved_slices;  // by variable op name, partitioned variables only
};

// Parses a serialized MetaGraphDef (which must outlive `spec`: graph_def points into it).
Status ParseMetaGraph(std::string_view serialized, MetaGraphSpec* spec);

// "SavedModel '<dir>' has no signature '<name>' (it has: ...)".
std::string MissingSignatureMessage(const MetaGraphSpec& meta_graph, const std::string& signature_name,
                                    const std::string& savedmodel_dir);

// Reads <savedmodel_dir>/saved_model.pb into `file` and finds the MetaGraphDef whose tag set is `tags`
// (as TensorFlow's loader does); `meta_graph` points into `file`.
Status ReadSavedModelMetaGraph(const std::string& savedmodel_dir, const std::vector<std::string>& tags,
                               std::string* file, std::string_view* meta_graph);

// Whether a serialized SavedModel (saved_model.pb) has a MetaGraphDef whose saver_def names a restore op:
// its graph has variables. TensorFlow's loader restores them only when variables/variables.index
// exists, and otherwise serves the graph with its variables uninitialized.
bool SavedModelRestoresVariables(std::string_view saved_model);


}  // namespace processor
