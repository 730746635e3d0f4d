// Requests' tensors merged along dimension 0 into one run's, and that run's outputs split back into
// each request's rows. Pure TensorFlow C API: any dtype TF_AllocateTensor makes, strings included.
#pragma once

#include <tensorflow/c/c_api.h>

#include <cstddef>
#include <cstdint>

#include "common/tf_handles.h"

namespace processor {

// The rows of `tensor` (its first dimension), or -1 for a scalar.
int64_t LeadingRows(const TF_Tensor* tensor);

// Whether a and b hold the same dtype and the same dims after the first (rows of one could follow
// rows of the other). False for scalars.
bool SameRowShape(const TF_Tensor* a, const TF_Tensor* b);

// One tensor of the `count` parts' rows in order (their dtypes and row shapes equal, checked by the
// caller with SameRowShape), padded to `rows` rows (at least their sum) with copies of the last row.
// Null when TensorFlow cannot allocate it.
TensorPtr ConcatRows(const TF_Tensor* const* parts, size_t count, int64_t rows);

// Rows [first, first + rows) of `whole` (a tensor of at least first + rows rows) as a tensor of its own.
TensorPtr SliceRows(const TF_Tensor* whole, int64_t first, int64_t rows);

}  // namespace processor
