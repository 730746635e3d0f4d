// Servable, updating a loaded version: a checkpoint restored in place (resource_preserving), deltas
// applied atomically for requests (to the session's variables and to local tables), and the graph's
// variables as the delta planner needs them.
#include "model/servable.h"

#include "common/logging.h"
#include "common/quote.h"
#include "model/graph_names.h"

namespace processor {

Status Servable::Restore(const std::string& prefix, const std::vector<SavedTensor>& saved) {
  if (feature_store_) {
    return Status::InvalidArgument("a version serving embeddings from the feature store is loaded whole, not restored in place");
  }
  PROCESSOR_RETURN_IF_ERROR(CheckCheckpointFits(Variables(), saved));
  const SaverSpec& saver = saver_;
  if (saver.filename_tensor_name.empty() || saver.restore_op_name.empty()) {
    return Status::Internal("the SavedModel has no saver_def, so checkpoint '" + prefix + "' cannot be restored");
  }
  TF_Output filename;
  PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(ResolvePort(graph_.get(), saver.filename_tensor_name, &filename), "saver_def");
  TF_Operation* restore = TF_GraphOperationByName(graph_.get(), saver.restore_op_name.c_str());
  if (!restore) return Status::Internal("saver_def names a missing restore op '" + saver.restore_op_name + "'");

  TensorPtr prefix_tensor(TF_AllocateTensor(TF_STRING, nullptr, 0, sizeof(TF_TString)));
  TF_TString* value = static_cast<TF_TString*>(TF_TensorData(prefix_tensor.get()));
  TF_TString_Init(value);
  TF_TString_Copy(value, prefix.data(), prefix.size());
  TF_Tensor* feed = prefix_tensor.get();
  const TF_Operation* target = restore;
  TfStatus status;
  TF_SessionRun(session_, update_run_options_.get(), &filename, &feed, 1, nullptr, nullptr, 0, &target, 1, nullptr,
                status.get());
  if (!status.ok()) return Status::Internal("cannot restore checkpoint '" + prefix + "': " + status.message());
  return Status::Ok();
}

DeltaApplier& Servable::delta_applier() {
  std::call_once(delta_applier_once_, [this] {
    delta_applier_ = std::make_unique<DeltaApplier>(graph_.get(), session_, update_run_options_.get(), &serving_lock_);
  });
  return *delta_applier_;
}

std::vector<VariableSpec> Servable::Variables() {
  std::vector<VariableSpec> variables = delta_applier().Variables();
  for (VariableSpec& variable : variables) {
    auto slice = saved_slices_.find(variable.name);
    if (slice != saved_slices_.end()) variable.saved_name = slice->second.full_name;
  }
  return variables;
}

Status Servable::ApplyDelta(const std::string& prefix, const std::vector<DeltaVariable>& requested) {
  std::vector<DeltaVariable> variables = requested;
  for (DeltaVariable& variable : variables) ReadFromSavedSlice(saved_slices_, &variable);
  std::vector<DeltaVariable> in_session;
  std::vector<std::string> names, slices;
  std::vector<TF_DataType> dtypes;
  std::vector<std::pair<const DeltaVariable*, LocalTable*>> in_tables;
  for (const DeltaVariable& variable : variables) {
    auto table = local_tables_.find(variable.name);
    if (table == local_tables_.end()) {
      in_session.push_back(variable);
      continue;
    }
    if (!variable.sparse && table->second->keyed_by_any_id()) {
      // A whole variable's rows 0..n-1 are not the ids of a table loaded from a Monolith dump.
      Log(LogLevel::kWarning, "incremental checkpoint " + Quote(prefix) + " saves " + Quote(variable.name) +
                                  " whole; its table holds a Monolith dump's ids, so its rows stay as they are");
      continue;
    }
    in_tables.emplace_back(&variable, table->second.get());
    if (variable.sparse) {
      names.push_back(variable.name + "-sparse_incr_keys");
      slices.emplace_back();
      dtypes.push_back(variable.key_dtype);
      names.push_back(variable.name + "-sparse_incr_values");
      slices.emplace_back();
    } else {
      names.push_back(variable.saved_name.empty() ? variable.name : variable.saved_name);
      slices.push_back(variable.shape_and_slice);
    }
    dtypes.push_back(TF_FLOAT);
  }
  if (in_tables.empty()) return delta_applier().Apply(prefix, in_session);

  // The tables' rows: read and checked now, written with the session's variables under one lock.
  std::vector<TensorPtr> tensors;
  PROCESSOR_RETURN_IF_ERROR(delta_applier().Read(prefix, names, slices, dtypes, &tensors));
  struct RowWrite {
    LocalTable* table;
    std::vector<int64_t> ids;
    const float* rows;
  };
  std::vector<RowWrite> writes;
  size_t next = 0;
  for (const auto& [variable, table] : in_tables) {
    RowWrite write{table, {}, nullptr};
    const TF_Tensor* rows;
    if (variable->sparse) {
      TensorPtr& keys_tensor = tensors[next++];
      TensorPtr& rows_tensor = tensors[next++];
      int64_t n = TF_NumDims(keys_tensor.get()) == 1 ? TF_Dim(keys_tensor.get(), 0) : -1;
      if (n < 0 || TF_NumDims(rows_tensor.get()) != 2 || TF_Dim(rows_tensor.get(), 0) != n ||
          TF_Dim(rows_tensor.get(), 1) != table->dim()) {
        return Status::InvalidArgument("delta " + Quote(prefix) + ": the rows of embedding " + Quote(variable->name) +
                                       " do not fit its table [" + std::to_string(table->rows()) + ", " +
                                       std::to_string(table->dim()) + "]");
      }
      if (!table->keyed_by_any_id()) {
        PROCESSOR_RETURN_IF_ERROR(DropRowsOutside(prefix, "embedding " + Quote(variable->name), table->rows(),
                                                  &keys_tensor, &rows_tensor));
      }
      const TF_Tensor* keys = keys_tensor.get();
      rows = rows_tensor.get();
      n = TF_Dim(keys, 0);
      if (TF_TensorType(keys) == TF_INT32) {
        const int32_t* narrow = static_cast<const int32_t*>(TF_TensorData(keys));
        write.ids.assign(narrow, narrow + n);
      } else {
        const int64_t* wide = static_cast<const int64_t*>(TF_TensorData(keys));
        write.ids.assign(wide, wide + n);
      }
    } else {
      rows = tensors[next++].get();
      if (TF_NumDims(rows) != 2 || TF_Dim(rows, 0) != table->rows() || TF_Dim(rows, 1) != table->dim()) {
        return Status::InvalidArgument("delta " + Quote(prefix) + ": embedding " + Quote(variable->name) +
                                       " does not have its table's shape");
      }
      write.ids.resize(table->rows());
      for (int64_t id = 0; id < table->rows(); ++id) write.ids[id] = id;
    }
    write.rows = static_cast<const float*>(TF_TensorData(rows));
    writes.push_back(std::move(write));
  }
  return delta_applier().Apply(prefix, in_session, [&writes] {
    for (const RowWrite& write : writes) PROCESSOR_RETURN_IF_ERROR(write.table->WriteRows(write.ids.data(), write.ids.size(), write.rows));
    return Status::Ok();
  });
}

}  // namespace processor
