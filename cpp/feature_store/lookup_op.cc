#include "feature_store/lookup_op.h"

#include <tensorflow/c/kernels.h>
#include <tensorflow/c/ops.h>

#include <memory>
#include <mutex>
#include <vector>

#include "common/tf_handles.h"
#include "feature_store/table_registry.h"

namespace processor {
namespace {

struct LookupKernel {
  std::shared_ptr<const EmbeddingTable> table;
};

void Fail(TF_OpKernelContext* context, TF_Code code, const std::string& message) {
  TfStatus status;
  TF_SetStatus(status.get(), code, message.c_str());
  TF_OpKernelContext_Failure(context, status.get());
}

void* CreateKernel(TF_OpKernelConstruction* construction) {
  TfStatus status;
  int32_t list_size = 0, total_size = 0;
  TF_OpKernelConstruction_GetAttrSize(construction, "table", &list_size, &total_size, status.get());
  std::string key(status.ok() && total_size > 0 ? total_size : 0, '\0');
  if (status.ok()) TF_OpKernelConstruction_GetAttrString(construction, "table", key.data(), key.size(), status.get());
  if (!status.ok()) {
    TF_OpKernelConstruction_Failure(construction, status.get());
    return nullptr;
  }
  auto kernel = std::make_unique<LookupKernel>();
  kernel->table = TableRegistry::Global().Find(key);
  if (!kernel->table) {
    TF_SetStatus(status.get(), TF_FAILED_PRECONDITION,
                 ("feature store table '" + key + "' is not registered (its servable is gone)").c_str());
    TF_OpKernelConstruction_Failure(construction, status.get());
    return nullptr;
  }
  return kernel.release();
}

void DeleteKernel(void* kernel) { delete static_cast<LookupKernel*>(kernel); }

void Compute(void* opaque, TF_OpKernelContext* context) {
  const EmbeddingTable& table = *static_cast<LookupKernel*>(opaque)->table;
  TfStatus status;
  TF_Tensor* raw_ids = nullptr;
  TF_Tensor* raw_default = nullptr;
  TF_GetInput(context, 0, &raw_ids, status.get());
  TensorPtr ids(raw_ids);
  if (status.ok()) TF_GetInput(context, 1, &raw_default, status.get());
  TensorPtr default_row(raw_default);
  if (!status.ok()) return TF_OpKernelContext_Failure(context, status.get());
  const size_t n = static_cast<size_t>(TF_TensorElementCount(ids.get()));
  // One default row for every id, or one per id (DeepRec's is_use_default_value_tensor gathers).
  const int default_rank = TF_NumDims(default_row.get());
  const bool per_id = default_rank == 2 && TF_Dim(default_row.get(), 0) == static_cast<int64_t>(n);
  if ((default_rank != 1 && !per_id) || TF_Dim(default_row.get(), default_rank - 1) != table.dim()) {
    return Fail(context, TF_INVALID_ARGUMENT, "default_row of table '" + table.name() + "' is neither [" +
                                                  std::to_string(table.dim()) + "] nor one row per id");
  }

  const int rank = TF_NumDims(ids.get());
  std::vector<int64_t> dims(rank + 1);
  for (int d = 0; d < rank; ++d) dims[d] = TF_Dim(ids.get(), d);
  dims[rank] = table.dim();
  TensorPtr rows(TF_AllocateOutput(context, 0, TF_FLOAT, dims.data(), rank + 1, n * table.dim() * sizeof(float),
                                   status.get()));
  if (!status.ok()) return TF_OpKernelContext_Failure(context, status.get());
  if (n == 0) return;

  std::vector<int64_t> widened;
  const int64_t* id_values = static_cast<const int64_t*>(TF_TensorData(ids.get()));
  if (TF_TensorType(ids.get()) == TF_INT32) {
    const int32_t* narrow = static_cast<const int32_t*>(TF_TensorData(ids.get()));
    widened.assign(narrow, narrow + n);
    id_values = widened.data();
  }
  const Status looked_up = table.Lookup(id_values, n, static_cast<const float*>(TF_TensorData(default_row.get())),
                                        static_cast<float*>(TF_TensorData(rows.get())),
                                        per_id ? static_cast<size_t>(table.dim()) : 0);
  if (!looked_up.ok()) {
    const TF_Code code = looked_up.code() == StatusCode::kUnavailable ? TF_UNAVAILABLE
                         : looked_up.code() == StatusCode::kInvalidArgument ? TF_INVALID_ARGUMENT
                                                                            : TF_INTERNAL;
    Fail(context, code, std::string(code == TF_UNAVAILABLE ? kStoreUnavailable : "") + "embedding table '" +
                            table.name() + "': " + looked_up.message());
  }
}

// rows: the ids' shape followed by default_row's last dimension (default_row is [dim] or [n, dim]).
void InferShape(TF_ShapeInferenceContext* context, TF_Status* status) {
  TF_ShapeHandle* ids = TF_NewShapeHandle();
  TF_ShapeHandle* defaults = TF_NewShapeHandle();
  TF_ShapeHandle* row = TF_NewShapeHandle();
  TF_ShapeHandle* rows = TF_NewShapeHandle();
  TF_ShapeInferenceContextGetInput(context, 0, ids, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextGetInput(context, 1, defaults, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextSubshape(context, defaults, -1, 1 << 30, row, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextConcatenateShapes(context, ids, row, rows, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextSetOutput(context, 0, rows, status);
  TF_DeleteShapeHandle(ids);
  TF_DeleteShapeHandle(defaults);
  TF_DeleteShapeHandle(row);
  TF_DeleteShapeHandle(rows);
}

Status Register() {
  TfStatus status;
  TF_OpDefinitionBuilder* op = TF_NewOpDefinitionBuilder(kEmbeddingLookupOp);
  TF_OpDefinitionBuilderAddInput(op, "ids: Tindices");
  TF_OpDefinitionBuilderAddInput(op, "default_row: float");
  TF_OpDefinitionBuilderAddOutput(op, "rows: float");
  TF_OpDefinitionBuilderAddAttr(op, "Tindices: {int32, int64}");
  TF_OpDefinitionBuilderAddAttr(op, "table: string");
  // Stateful: the rows come from outside the graph, so TensorFlow must neither fold nor merge lookups.
  TF_OpDefinitionBuilderSetIsStateful(op, true);
  TF_OpDefinitionBuilderSetShapeInferenceFunction(op, &InferShape);
  TF_RegisterOpDefinition(op, status.get());  // takes the builder
  if (!status.ok()) return Status::Internal("cannot register op " + std::string(kEmbeddingLookupOp) + ": " + status.message());
  TF_KernelBuilder* kernel = TF_NewKernelBuilder(kEmbeddingLookupOp, "CPU", &CreateKernel, &Compute, &DeleteKernel);
  TF_RegisterKernelBuilder(kEmbeddingLookupOp, kernel, status.get());  // takes the builder
  if (!status.ok()) return Status::Internal("cannot register the kernel of " + std::string(kEmbeddingLookupOp) + ": " + status.message());
  return Status::Ok();
}

}  // namespace

Status RegisterEmbeddingLookupOp() {
  static const Status registered = Register();
  return registered;
}

}  // namespace processor
