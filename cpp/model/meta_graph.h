// What the data plane needs from a MetaGraphDef: signatures, the saver, table initializers.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace processor {

struct TensorSpec {
  std::string alias;        // key in the SignatureDef
  std::string tensor_name;  // "op:index"
  int dtype = 0;            // tensorflow DataType (== ArrayDataType numbering)
  bool unknown_rank = false;
  std::vector<int64_t> dims;  // -1 for unknown
};

struct SignatureSpec {
  std::string method_name;
  std::vector<TensorSpec> inputs;   // sorted by alias
  std::vector<TensorSpec> outputs;  // sorted by alias
};

struct SaverSpec {
  std::string filename_tensor_name;  // feed the checkpoint prefix here...
  std::string restore_op_name;       // ...and run this target
};

struct MetaGraphSpec {
  std::map<std::string, SignatureSpec> signatures;
  SaverSpec saver;  // empty names when the MetaGraphDef has no saver_def
  std::vector<std::string> table_initializers;  // op names in the "table_initializer" collection
};

// Parses a serialized MetaGraphDef.
Status ParseMetaGraph(std::string_view serialized, MetaGraphSpec* spec);

// "DT_FLOAT" for 1, "DT_INVALID" for unknown numbers.
const char* DataTypeName(int dtype);

}  // namespace processor
