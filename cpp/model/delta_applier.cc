#include "model/delta_applier.h"

#include <tensorflow/c/tf_tstring.h>

#include <cstring>
#include <mutex>

#include "common/logging.h"
#include "common/quote.h"
#include "common/shape_string.h"
#include "common/tf_handles.h"
#include "common/tsan_annotations.h"
#include "model/meta_graph.h"

namespace processor {
namespace {


template <typename Key>
std::vector<int64_t> RowsOutside(const TF_Tensor* keys, int64_t rows) {
  ReadingTensorFlowOutputs keys_restored_by_tensorflow;
  const Key* data = static_cast<const Key*>(TF_TensorData(keys));
  std::vector<int64_t> outside;
  for (int64_t i = 0; i < TF_Dim(keys, 0); ++i) {
    if (data[i] < 0 || data[i] >= rows) outside.push_back(i);
  }
  return outside;
}

Status CheckSparse(const TF_Tensor* keys, const TF_Tensor* values, const std::vector<int64_t>& shape) {
  if (TF_NumDims(keys) != 1) return Status::InvalidArgument("keys have shape " + ShapeString(keys) + ", not [n]");
  bool matches = !shape.empty() && TF_NumDims(values) == static_cast<int>(shape.size()) && TF_Dim(values, 0) == TF_Dim(keys, 0);
  for (size_t d = 1; matches && d < shape.size(); ++d) matches = TF_Dim(values, d) == shape[d];
  if (!matches) {
    return Status::InvalidArgument("values have shape " + ShapeString(values) + " for " + std::to_string(TF_Dim(keys, 0)) +
                                   " keys of a variable of shape " + ShapeString(shape));
  }
  return Status::Ok();
}

Status CheckWhole(const TF_Tensor* value, const std::vector<int64_t>& shape) {
  bool matches = TF_NumDims(value) == static_cast<int>(shape.size());
  for (size_t d = 0; matches && d < shape.size(); ++d) matches = TF_Dim(value, d) == shape[d];
  if (matches) return Status::Ok();
  return Status::InvalidArgument("value has shape " + ShapeString(value) + ", the variable " + ShapeString(shape));
}

}  // namespace

void ReadFromSavedSlice(const std::map<std::string, SavedSlice>& slices, DeltaVariable* variable) {
  auto slice = slices.find(variable->name);
  if (variable->sparse || slice == slices.end() || !variable->saved_name.empty()) return;
  variable->saved_name = slice->second.full_name;
  variable->shape_and_slice = slice->second.shape_and_slice;
}

Status DropRowsOutside(const std::string& prefix, const std::string& what, int64_t limit, TensorPtr* keys,
                       TensorPtr* rows) {
  const bool narrow = TF_TensorType(keys->get()) == TF_INT32;
  const std::vector<int64_t> outside = narrow ? RowsOutside<int32_t>(keys->get(), limit)
                                              : RowsOutside<int64_t>(keys->get(), limit);
  if (outside.empty()) return Status::Ok();
  const size_t key_bytes = narrow ? sizeof(int32_t) : sizeof(int64_t);
  const char* key_data = static_cast<const char*>(TF_TensorData(keys->get()));
  const int64_t first_id = narrow ? reinterpret_cast<const int32_t*>(key_data)[outside[0]]
                                  : reinterpret_cast<const int64_t*>(key_data)[outside[0]];
  const std::string range = "[0, " + std::to_string(limit) + ")";
  if (TF_TensorType(rows->get()) == TF_STRING) {
    return Status::InvalidArgument(what + ": row id " + std::to_string(first_id) + " is outside " + range);
  }
  const int64_t n = TF_Dim(keys->get(), 0), kept = n - static_cast<int64_t>(outside.size());
  const size_t row_bytes = TF_TensorByteSize(rows->get()) / static_cast<size_t>(n);
  std::vector<int64_t> key_dims{kept}, row_dims{kept};
  for (int d = 1; d < TF_NumDims(rows->get()); ++d) row_dims.push_back(TF_Dim(rows->get(), d));
  TensorPtr kept_keys(TF_AllocateTensor(TF_TensorType(keys->get()), key_dims.data(), 1, kept * key_bytes));
  TensorPtr kept_rows(TF_AllocateTensor(TF_TensorType(rows->get()), row_dims.data(), static_cast<int>(row_dims.size()),
                                        kept * row_bytes));
  const char* row_data = static_cast<const char*>(TF_TensorData(rows->get()));
  char* to_keys = static_cast<char*>(TF_TensorData(kept_keys.get()));
  char* to_rows = static_cast<char*>(TF_TensorData(kept_rows.get()));
  size_t next_outside = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (next_outside < outside.size() && outside[next_outside] == i) {
      ++next_outside;
      continue;
    }
    std::memcpy(to_keys, key_data + i * key_bytes, key_bytes);
    std::memcpy(to_rows, row_data + i * row_bytes, row_bytes);
    to_keys += key_bytes;
    to_rows += row_bytes;
  }
  *keys = std::move(kept_keys);
  *rows = std::move(kept_rows);
  Log(LogLevel::kWarning, "incremental checkpoint " + Quote(prefix) + ": " + what + ": skipped " +
                              std::to_string(outside.size()) + " row(s) whose id is outside " + range +
                              " (the first: " + std::to_string(first_id) + "); the other rows apply");
  return Status::Ok();
}


std::vector<VariableSpec> DeltaApplier::Variables() {
  std::vector<VariableSpec> specs;
  size_t position = 0;
  while (TF_Operation* op = TF_GraphNextOperation(graph_, &position)) {
    const std::string type = TF_OperationOpType(op);
    if (type != "VarHandleOp" && type != "VariableV2" && type != "Variable") continue;
    Variable variable;
    VariableSpec spec;
    spec.name = TF_OperationName(op);
    spec.known_rank = Describe(spec.name, &variable).ok() && variable.known_rank;
    spec.dtype = variable.dtype;
    spec.shape = variable.shape;
    specs.push_back(std::move(spec));
  }
  return specs;
}

Status DeltaApplier::Describe(const std::string& name, Variable* variable) {
  variable->op = TF_GraphOperationByName(graph_, name.c_str());
  if (!variable->op) return Status::InvalidArgument("the graph has no variable " + Quote(name));
  const std::string type = TF_OperationOpType(variable->op);
  variable->resource = type == "VarHandleOp";
  if (!variable->resource && type != "VariableV2" && type != "Variable") {
    return Status::InvalidArgument(Quote(name) + " is a " + type + ", not a variable");
  }
  TfStatus status;
  TF_OperationGetAttrType(variable->op, "dtype", &variable->dtype, status.get());
  TF_AttrMetadata shape_meta = TF_OperationGetAttrMetadata(variable->op, "shape", status.get());
  if (status.ok() && shape_meta.total_size >= 0) {
    variable->known_rank = true;
    variable->shape.resize(shape_meta.total_size);
    TF_OperationGetAttrShape(variable->op, "shape", variable->shape.data(), static_cast<int>(variable->shape.size()),
                             status.get());
  }
  if (!status.ok()) return Status::Internal("cannot read the attributes of variable " + Quote(name) + ": " + status.message());
  return Status::Ok();
}

Status DeltaApplier::RestoreOp(const std::vector<std::string>& names, const std::vector<std::string>& slices,
                               const std::vector<TF_DataType>& dtypes, TF_Operation** restore) {
  std::string key;
  for (size_t i = 0; i < names.size(); ++i) {
    key += names[i] + '|' + slices[i] + '|' + std::to_string(dtypes[i]) + '|';  // '|' is never in op names or slices
  }
  auto cached = restores_.find(key);
  if (cached != restores_.end()) {
    *restore = cached->second;
    return Status::Ok();
  }
  if (!prefix_.oper) PROCESSOR_RETURN_IF_ERROR(builder_.Placeholder(TF_STRING, &prefix_));
  TF_Output tensor_names, shape_and_slices;
  PROCESSOR_RETURN_IF_ERROR(builder_.StringVector(names, &tensor_names));
  PROCESSOR_RETURN_IF_ERROR(builder_.StringVector(slices, &shape_and_slices));
  PROCESSOR_RETURN_IF_ERROR(builder_.RestoreV2(prefix_, tensor_names, shape_and_slices, dtypes, restore));
  restores_[key] = *restore;
  return Status::Ok();
}

Status DeltaApplier::UpdateOp(const DeltaVariable& delta, const Variable& variable, Update** update) {
  const std::string key = delta.name + (delta.sparse ? "|sparse|" + std::to_string(delta.key_dtype) : "|whole");
  auto cached = updates_.find(key);
  if (cached != updates_.end()) {
    *update = &cached->second;
    return Status::Ok();
  }
  Update built;
  const TF_Output target{variable.op, 0};
  PROCESSOR_RETURN_IF_ERROR(builder_.Placeholder(variable.dtype, &built.values));
  if (delta.sparse) {
    PROCESSOR_RETURN_IF_ERROR(builder_.Placeholder(delta.key_dtype, &built.keys));
    PROCESSOR_RETURN_IF_ERROR(builder_.Op(variable.resource ? "ResourceScatterUpdate" : "ScatterUpdate",
                                          {target, built.keys, built.values}, &built.op));
  } else {
    PROCESSOR_RETURN_IF_ERROR(builder_.Op(variable.resource ? "AssignVariableOp" : "Assign", {target, built.values}, &built.op));
  }
  *update = &(updates_[key] = built);
  return Status::Ok();
}

Status DeltaApplier::Read(const std::string& prefix, const std::vector<std::string>& names,
                          const std::vector<std::string>& slices, const std::vector<TF_DataType>& dtypes,
                          std::vector<TensorPtr>* tensors) {
  std::lock_guard<std::mutex> lock(mu_);
  return ReadLocked(prefix, names, slices, dtypes, tensors, "checkpoint");
}

Status DeltaApplier::ReadLocked(const std::string& prefix, const std::vector<std::string>& names,
                                const std::vector<std::string>& slices, const std::vector<TF_DataType>& dtypes,
                                std::vector<TensorPtr>* tensors, const char* what) {
  TF_Operation* restore = nullptr;
  PROCESSOR_RETURN_IF_ERROR(RestoreOp(names, slices.empty() ? std::vector<std::string>(names.size()) : slices, dtypes,
                                      &restore));
  TensorPtr prefix_tensor(TF_AllocateTensor(TF_STRING, nullptr, 0, sizeof(TF_TString)));
  TF_TString* prefix_value = static_cast<TF_TString*>(TF_TensorData(prefix_tensor.get()));
  TF_TString_Init(prefix_value);
  TF_TString_Copy(prefix_value, prefix.data(), prefix.size());
  std::vector<TF_Output> restored(names.size());
  for (size_t i = 0; i < names.size(); ++i) restored[i] = TF_Output{restore, static_cast<int>(i)};
  std::vector<TF_Tensor*> raw(names.size(), nullptr);
  TF_Tensor* feed = prefix_tensor.get();
  TfStatus status;
  TF_SessionRun(session_, run_options_, &prefix_, &feed, 1, restored.data(), raw.data(), static_cast<int>(raw.size()),
                nullptr, 0, nullptr, status.get());
  tensors->clear();
  for (TF_Tensor* t : raw) tensors->emplace_back(t);
  if (!status.ok()) return Status::InvalidArgument(std::string("cannot read ") + what + " " + Quote(prefix) + ": " + status.message());
  return Status::Ok();
}

Status DeltaApplier::Apply(const std::string& prefix, const std::vector<DeltaVariable>& deltas,
                           const std::function<Status()>& also_under_lock) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Variable> variables(deltas.size());
  std::vector<std::string> names, slices;
  std::vector<TF_DataType> dtypes;
  for (size_t i = 0; i < deltas.size(); ++i) {
    PROCESSOR_RETURN_IF_ERROR(Describe(deltas[i].name, &variables[i]));
    if (deltas[i].sparse) {
      if (deltas[i].key_dtype != TF_INT64 && deltas[i].key_dtype != TF_INT32) {
        return Status::InvalidArgument(Quote(deltas[i].name) + ": row ids must be int32 or int64");
      }
      if (variables[i].shape.empty()) return Status::InvalidArgument(Quote(deltas[i].name) + " is a scalar: it has no rows");
      names.push_back(deltas[i].name + "-sparse_incr_keys");
      dtypes.push_back(deltas[i].key_dtype);
      names.push_back(deltas[i].name + "-sparse_incr_values");
      slices.resize(names.size());
    } else {
      names.push_back(deltas[i].saved_name.empty() ? deltas[i].name : deltas[i].saved_name);
      slices.push_back(deltas[i].shape_and_slice);
    }
    dtypes.push_back(variables[i].dtype);
  }
  auto write_only_others = [&]() -> Status {
    if (!also_under_lock) return Status::Ok();
    std::unique_lock<WriterPreferringLock> exclusive(*serving_lock_);
    return also_under_lock();
  };
  if (names.empty()) return write_only_others();

  // Read the changed tensors while requests keep running.
  std::vector<TensorPtr> tensors;
  PROCESSOR_RETURN_IF_ERROR(ReadLocked(prefix, names, slices, dtypes, &tensors, "incremental checkpoint"));

  // Check everything before writing anything.
  std::vector<TF_Output> feeds;
  std::vector<TF_Tensor*> values;
  std::vector<const TF_Operation*> targets;
  size_t next = 0;
  for (size_t i = 0; i < deltas.size(); ++i) {
    Update* update = nullptr;
    PROCESSOR_RETURN_IF_ERROR(UpdateOp(deltas[i], variables[i], &update));
    if (deltas[i].sparse) {
      TensorPtr& keys_tensor = tensors[next++];
      TensorPtr& rows_tensor = tensors[next++];
      const std::string context = "variable " + Quote(deltas[i].name);
      PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(CheckSparse(keys_tensor.get(), rows_tensor.get(), variables[i].shape), context);
      PROCESSOR_RETURN_IF_ERROR(DropRowsOutside(prefix, context, variables[i].shape[0], &keys_tensor, &rows_tensor));
      TF_Tensor* keys = keys_tensor.get();
      TF_Tensor* rows = rows_tensor.get();
      if (TF_Dim(keys, 0) == 0) continue;
      feeds.push_back(update->keys);
      values.push_back(keys);
      feeds.push_back(update->values);
      values.push_back(rows);
    } else {
      TF_Tensor* value = tensors[next++].get();
      PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(CheckWhole(value, variables[i].shape), "variable " + Quote(deltas[i].name));
      feeds.push_back(update->values);
      values.push_back(value);
    }
    targets.push_back(update->op);
  }
  if (targets.empty()) return write_only_others();

  // Write every variable in one run, with no request in flight.
  TfStatus status;
  std::unique_lock<WriterPreferringLock> exclusive(*serving_lock_);
  TF_SessionRun(session_, run_options_, feeds.data(), values.data(), static_cast<int>(feeds.size()), nullptr, nullptr, 0,
                targets.data(), static_cast<int>(targets.size()), nullptr, status.get());
  if (!status.ok()) return Status::Internal("applying incremental checkpoint " + Quote(prefix) + " failed: " + status.message());
  return also_under_lock ? also_under_lock() : Status::Ok();
}

}  // namespace processor
