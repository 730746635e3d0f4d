// The tensor builder: an ArrayView's values copied once, from the request's bytes into a TF_Tensor of
// the array's dtype and shape, after the checks a tensor needs (dtype, value field, count, ranges).
#include "codec/predict_codec.h"

#include <tensorflow/c/tf_tstring.h>

#include <algorithm>
#include <cstring>

#include "codec/array_fields.h"
#include "codec/packed_varints.h"
#include "codec/string_runs.h"
#include "common/shape_string.h"
#include "common/tsan_annotations.h"
#include "common/wire_format.h"

namespace processor {
namespace {

using namespace codec;
using wire::Reader;
const auto& kFieldNames = kArrayFieldNames;

template <typename T>
Status CopyNarrowInts(const ArrayView& array, int64_t lo, int64_t hi, void* out) {
  T* dst = static_cast<T*>(out);
  bool in_range = true;
  int64_t bad = 0;
  ForEachVarint(array, kIntVal, [&](uint64_t raw) {
    int64_t v = static_cast<int32_t>(raw);  // int_val is int32 on the wire
    if (v < lo || v > hi) {
      if (in_range) bad = v;
      in_range = false;
    }
    *dst++ = static_cast<T>(v);
  });
  if (!in_range) return Status::InvalidArgument("value " + std::to_string(bad) + " is out of range");
  return Status::Ok();
}

// Copies float_val/double_val (packed runs in one copy each) into `out`.
void CopyFixed(const ArrayView& array, uint32_t field, size_t width, void* out) {
  char* dst = static_cast<char*>(out);
  if (array.only_run_field == field) {
    CopyBytes(dst, array.only_run.data(), array.only_run.size());
    return;
  }
  ForEachOccurrence(array, field, [&](Reader& r, uint32_t wire_type) {
    std::string_view bytes = wire_type == wire::kLengthDelimited ? r.LengthDelimited() : r.Fixed(width);
    if (!bytes.empty()) std::memcpy(dst, bytes.data(), bytes.size());
    dst += bytes.size();
  });
}

// Tensors above this size are not kept for the thread's next request: their memory would stay with it.
constexpr size_t kMaxKeptTensorBytes = 256 << 10;

bool SameDims(const SmallVector<int64_t, 4>& a, const SmallVector<int64_t, 4>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end());
}

// `previous` when values of `dtype` and shape `dims` can be written into it in place, else null
// (deleting it). Writing into the previous request's tensor saves TF's allocation and release (for
// strings, TF's release visits every element). With `known` (what the caller recorded of it), the
// shape is not asked of TensorFlow, a call per dim. TF_TensorMaybeMove succeeds only while nothing
// else (an output aliasing the input, a variable assigned from it) shares the buffer.
// Buys: -16 % instructions per request; for all-inline string tensors, with the checked varint
// decoding, -17 % at batch 512 (make profile).
TensorPtr Reusable(TensorPtr previous, TF_DataType dtype, const SmallVector<int64_t, 4>& dims,
                   const KeptTensorShape* known) {
  if (!previous) return nullptr;
  if (known) {
    if (known->dtype != dtype || !SameDims(known->dims, dims)) return nullptr;
  } else {
    if (TF_TensorType(previous.get()) != dtype || TF_NumDims(previous.get()) != static_cast<int>(dims.size())) {
      return nullptr;
    }
    for (size_t i = 0; i < dims.size(); ++i) {
      if (TF_Dim(previous.get(), static_cast<int>(i)) != dims[i]) return nullptr;
    }
  }
  TF_Tensor* shared = previous.release();
  TF_Tensor* moved = TF_TensorMaybeMove(shared);
  if (!moved) TF_DeleteTensor(shared);  // untouched when it cannot move: ours to delete
  return TensorPtr(moved);
}

// The protocol's dtypes' element sizes, without a call into TensorFlow.
size_t ElementSize(TF_DataType dtype) {
  switch (dtype) {
    case TF_DOUBLE:
    case TF_INT64: return 8;
    case TF_FLOAT:
    case TF_INT32: return 4;
    case TF_INT16: return 2;
    case TF_STRING: return sizeof(TF_TString);
    default: return 1;  // TF_BOOL, TF_INT8, TF_UINT8 (MakeTensor takes no other)
  }
}

}  // namespace

Status MakeTensor(const ArrayView& array, TensorPtr* tensor, bool* worth_keeping, KeptTensorShape* shape) {
  const int value_field = ValueFieldForDtype(array.dtype);
  if (array.dtype == 0) return Status::InvalidArgument("dtype is not set (DT_INVALID)");
  if (value_field == 0) {
    return Status::InvalidArgument(std::string("dtype ") + DataTypeName(array.dtype) + " cannot be sent in an ArrayProto");
  }
  for (int field = kFloatVal; field <= static_cast<int>(kBoolVal); ++field) {
    if (field != value_field && array.counts[field]) {
      return Status::InvalidArgument(std::string(DataTypeName(array.dtype)) + " values belong in " +
                                     kFieldNames[value_field] + ", but " + kFieldNames[field] + " is set");
    }
  }
  int64_t n = 0;
  PROCESSOR_RETURN_IF_ERROR(ShapeElementCount(array, &n));
  const int64_t sent = array.counts[value_field];
  if (sent != n) {
    return Status::InvalidArgument("shape " + ShapeString(array.dims) + " needs " + std::to_string(n) + " values but " +
                                   std::to_string(sent) + " were sent in " + kFieldNames[value_field] +
                                   (array.has_shape ? "" : " (array_shape is not set, which means a scalar)"));
  }

  const TF_DataType dtype = static_cast<TF_DataType>(array.dtype);
  const size_t element_size = ElementSize(dtype);
  TensorPtr t = Reusable(std::move(*tensor), dtype, array.dims, shape);
  const bool reused = t != nullptr;
  if (!reused) t.reset(TF_AllocateTensor(dtype, array.dims.data(), static_cast<int>(array.dims.size()), n * element_size));
  if (!t) return Status::Internal("cannot allocate a tensor of " + std::to_string(n) + " elements");
  void* out = TF_TensorData(t.get());
  Status status;
  bool heap_strings = false;
  OverwritingTensorFlowInput overwriting(reused);
  switch (dtype) {
    case TF_FLOAT: CopyFixed(array, kFloatVal, 4, out); break;
    case TF_DOUBLE: CopyFixed(array, kDoubleVal, 8, out); break;
    case TF_INT64: {
      ForEachVarint(array, kInt64Val, Int64Writer(static_cast<int64_t*>(out), n));
      break;
    }
    case TF_BOOL: {
      bool* dst = static_cast<bool*>(out);
      ForEachVarint(array, kBoolVal, [&](uint64_t v) { *dst++ = v != 0; });
      break;
    }
    case TF_INT32: status = CopyNarrowInts<int32_t>(array, INT32_MIN, INT32_MAX, out); break;
    case TF_INT16: status = CopyNarrowInts<int16_t>(array, INT16_MIN, INT16_MAX, out); break;
    case TF_INT8: status = CopyNarrowInts<int8_t>(array, INT8_MIN, INT8_MAX, out); break;
    case TF_UINT8: status = CopyNarrowInts<uint8_t>(array, 0, UINT8_MAX, out); break;
    case TF_STRING:
      if (array.staged_count == n) {
        if (n) std::memcpy(out, array.staged_strings, n * sizeof(TF_TString));  // inline TStrings are plain bytes
      } else {
        heap_strings = CopyStrings(array, static_cast<TF_TString*>(out));
      }
      break;
    default: return Status::Internal("unreachable dtype");
  }
  if (!status.ok()) return status.WithContext(DataTypeName(array.dtype));
  if (worth_keeping) *worth_keeping = !heap_strings && n * element_size <= kMaxKeptTensorBytes;
  if (shape && !reused) {
    shape->dtype = dtype;
    shape->dims = array.dims;
  }
  *tensor = std::move(t);
  return Status::Ok();
}

}  // namespace processor
