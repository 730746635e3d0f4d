// PredictRequest / PredictResponse codec over TF tensors.
//
// Decoding happens in two steps so that a request is checked against the signature before any tensor
// memory is allocated: ParsePredictRequest() only records where each value lives in the caller's buffer
// (string_views, no copies); MakeTensor() then copies the values once, straight into a TF_Tensor.
// Short strings are the exception: the parse must walk them anyway, so it writes them into a
// thread's StringStaging as it goes, and MakeTensor copies them as bytes.
// Encoding sizes the response first and writes it once into a single malloc'd buffer.
#pragma once

#include <tensorflow/c/c_api.h>
#include <tensorflow/c/tf_tstring.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/dtypes.h"
#include "common/small_vector.h"
#include "common/status.h"
#include "common/tf_handles.h"

namespace processor {

// An ArrayProto, parsed but not copied: its bytes (several pieces when protobuf merge semantics join
// repeated occurrences), the shape, and how many values each value field holds. MakeTensor() reads
// the values from the bytes again, straight into the tensor: no per-value bookkeeping in between.
struct ArrayView {
  int dtype = 0;
  bool has_shape = false;  // absent shape means scalar, as for TensorProto
  SmallVector<int64_t, 4> dims;
  SmallVector<std::string_view, 2> pieces;
  // Values per ArrayProto field number: 3 float, 4 double, 5 int, 6 string, 7 int64, 8 bool.
  int64_t counts[9] = {};
  // Numeric values that came as one packed run (as serializers write them) are read from it
  // directly: only_run_field is then that field, and 0 when there were more runs or unpacked values.
  int value_occurrences = 0;
  uint32_t only_run_field = 0;
  std::string_view only_run;
  // Its string_val values in TString's inline form, written by the parse (see StringStaging): usable
  // when staged_count equals counts[6], that is when every one was short enough and found room.
  const TF_TString* staged_strings = nullptr;
  int64_t staged_count = 0;
};

// Where the parse writes the strings of one request. A run of repeated strings is a chain of
// lengths, each locating the next, so every walk over it waits on each length in turn: the parse's
// walk writes each string as it passes (the writes do not lengthen the chain) and building the
// tensor copies bytes instead of walking the request again. A thread keeps its staging from request
// to request; strings that find no room are read from the request, as longer strings always are.
class StringStaging {
 public:
  // At most this many strings (24 bytes each) are staged per request: a thread keeps up to 384 KiB.
  static constexpr size_t kMaxStrings = 1 << 14;

  // Drops what was staged and makes room for the strings of a request of `request_bytes` (each
  // takes at least two bytes on the wire), up to kMaxStrings. Room never moves during a parse, so the
  // views' pointers stay valid until the next Reset.
  void Reset(size_t request_bytes) {
    const size_t wanted = std::min(request_bytes / 2, kMaxStrings);
    if (wanted > capacity_) {
      buffer_.reset(new TF_TString[wanted]);  // trivial type: no pages touched until staged
      capacity_ = wanted;
    }
    next = buffer_.get();
    limit = next + capacity_;
  }

  TF_TString* next = nullptr;   // where the next staged string goes
  TF_TString* limit = nullptr;  // the end of the room

 private:
  std::unique_ptr<TF_TString[]> buffer_;
  size_t capacity_ = 0;
};

struct RequestView {
  std::string_view signature_name;
  // In wire order. A key may come again: protobuf's map semantics make the last one count, which the
  // caller applies (looking keys up once per request rather than comparing each with the others).
  std::vector<std::pair<std::string_view, ArrayView>> inputs;
  std::vector<std::string_view> output_filter;
  StringStaging strings;

  // Empties the view but keeps its capacity, so a thread can parse request after request without
  // allocating.
  void Clear() {
    signature_name = {};
    inputs.clear();
    output_filter.clear();
  }
};

// Parses a serialized PredictRequest. Fails with InvalidArgument naming what is malformed.
Status ParsePredictRequest(const void* data, size_t size, RequestView* request);

// What is wrong with a shape ShapeElementCount refuses.
Status ShapeElementCountError(const ArrayView& array);

// Number of elements the array's shape calls for; InvalidArgument on negative dims or overflow.
// Inline: every input's shape is counted by the binder and by MakeTensor.
inline Status ShapeElementCount(const ArrayView& array, int64_t* count) {
  int64_t n = 1;
  for (int64_t dim : array.dims) {
    if (dim < 0 || __builtin_mul_overflow(n, dim, &n)) return ShapeElementCountError(array);
  }
  *count = n;
  return Status::Ok();
}

// What a caller that keeps a tensor for MakeTensor to reuse knows of it: its dtype and dims, as
// MakeTensor made it, so that reusing it asks TensorFlow only whether it is still the sole holder.
struct KeptTensorShape {
  TF_DataType dtype = TF_FLOAT;
  SmallVector<int64_t, 4> dims;
};

// Copies the values into a tensor of the array's dtype and shape. Checks that the dtype can travel in
// the protocol, that values sit in the field the dtype uses, that their count matches the shape and
// that narrow integers are in range. A tensor already in `*tensor` (an earlier request's) is written
// in place when it has the array's dtype and shape and TensorFlow holds no reference to it; otherwise
// it is deleted and a new one allocated. `*worth_keeping` (if given) says whether keeping the tensor
// for such reuse costs little memory: it is small and holds no string on the heap. With `shape`, the
// caller's record of the tensor in `*tensor`, which MakeTensor keeps up to date.
Status MakeTensor(const ArrayView& array, TensorPtr* tensor, bool* worth_keeping = nullptr,
                  KeptTensorShape* shape = nullptr);

// Serializes a PredictResponse of tensors[i] named names[i] into a buffer from malloc(); the caller
// frees it.
Status EncodePredictResponse(const std::vector<std::string_view>& names, const OwnedTensors& tensors, void** data,
                             int* size);

}  // namespace processor
