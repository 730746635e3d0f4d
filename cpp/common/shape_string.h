// How error messages show a shape: "[2,3]", "[]" for a scalar.
#pragma once

#include <tensorflow/c/c_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace processor {

inline std::string ShapeString(const int64_t* dims, size_t rank) {
  std::string s = "[";
  for (size_t i = 0; i < rank; ++i) s += (i ? "," : "") + std::to_string(dims[i]);
  return s + "]";
}

// Any contiguous container of int64_t dims (std::vector, SmallVector).
template <typename Dims>
std::string ShapeString(const Dims& dims) {
  return ShapeString(dims.data(), dims.size());
}

inline std::string ShapeString(const TF_Tensor* tensor) {
  std::string s = "[";
  for (int i = 0; i < TF_NumDims(tensor); ++i) s += (i ? "," : "") + std::to_string(TF_Dim(tensor, i));
  return s + "]";
}

}  // namespace processor
