#include "batching/batch_tensors.h"

#include <tensorflow/c/tf_tstring.h>

#include <cstring>
#include <vector>

namespace processor {
namespace {

std::vector<int64_t> Dims(const TF_Tensor* t) {
  std::vector<int64_t> dims(TF_NumDims(t));
  for (size_t i = 0; i < dims.size(); ++i) dims[i] = TF_Dim(t, static_cast<int>(i));
  return dims;
}

// Elements in one row of `t` (the product of its dims after the first).
int64_t RowElements(const TF_Tensor* t) {
  int64_t n = 1;
  for (int i = 1; i < TF_NumDims(t); ++i) n *= TF_Dim(t, i);
  return n;
}

TensorPtr Allocate(const TF_Tensor* like, int64_t rows) {
  std::vector<int64_t> dims = Dims(like);
  dims[0] = rows;
  const size_t element = TF_TensorType(like) == TF_STRING ? sizeof(TF_TString) : TF_DataTypeSize(TF_TensorType(like));
  return TensorPtr(TF_AllocateTensor(TF_TensorType(like), dims.data(), static_cast<int>(dims.size()),
                                     static_cast<size_t>(rows * RowElements(like)) * element));
}

// Copies `n` elements from `src` to `dst`: bytes, or for strings each TString (a heap string is copied,
// never shared: each tensor frees its own).
void CopyElements(TF_DataType dtype, const void* src, void* dst, int64_t n) {
  if (n <= 0) return;
  if (dtype != TF_STRING) {
    std::memcpy(dst, src, static_cast<size_t>(n) * TF_DataTypeSize(dtype));
    return;
  }
  const auto* from = static_cast<const TF_TString*>(src);
  auto* to = static_cast<TF_TString*>(dst);
  for (int64_t i = 0; i < n; ++i) {
    TF_TString_Init(&to[i]);
    TF_TString_Copy(&to[i], TF_TString_GetDataPointer(&from[i]), TF_TString_GetSize(&from[i]));
  }
}

size_t ElementBytes(TF_DataType dtype) { return dtype == TF_STRING ? sizeof(TF_TString) : TF_DataTypeSize(dtype); }

}  // namespace

int64_t LeadingRows(const TF_Tensor* tensor) { return TF_NumDims(tensor) > 0 ? TF_Dim(tensor, 0) : -1; }

bool SameRowShape(const TF_Tensor* a, const TF_Tensor* b) {
  if (TF_TensorType(a) != TF_TensorType(b) || TF_NumDims(a) != TF_NumDims(b) || TF_NumDims(a) < 1) return false;
  for (int i = 1; i < TF_NumDims(a); ++i) {
    if (TF_Dim(a, i) != TF_Dim(b, i)) return false;
  }
  return true;
}

TensorPtr ConcatRows(const TF_Tensor* const* parts, size_t count, int64_t rows) {
  TensorPtr merged = Allocate(parts[0], rows);
  if (!merged) return merged;
  const TF_DataType dtype = TF_TensorType(parts[0]);
  const int64_t row_elements = RowElements(parts[0]);
  const size_t row_bytes = static_cast<size_t>(row_elements) * ElementBytes(dtype);
  char* out = static_cast<char*>(TF_TensorData(merged.get()));
  int64_t written = 0;
  for (size_t i = 0; i < count; ++i) {
    const int64_t n = TF_Dim(parts[i], 0);
    CopyElements(dtype, TF_TensorData(parts[i]), out + written * row_bytes, n * row_elements);
    written += n;
  }
  for (; written < rows && written > 0; ++written) {  // padding: the last row again
    CopyElements(dtype, out + (written - 1) * row_bytes, out + written * row_bytes, row_elements);
  }
  return merged;
}

TensorPtr SliceRows(const TF_Tensor* whole, int64_t first, int64_t rows) {
  TensorPtr slice = Allocate(whole, rows);
  if (!slice) return slice;
  const TF_DataType dtype = TF_TensorType(whole);
  const int64_t row_elements = RowElements(whole);
  const size_t row_bytes = static_cast<size_t>(row_elements) * ElementBytes(dtype);
  CopyElements(dtype, static_cast<const char*>(TF_TensorData(whole)) + first * row_bytes, TF_TensorData(slice.get()),
               rows * row_elements);
  return slice;
}

}  // namespace processor
