// numpy arrays <-> PredictRequest / PredictResponse bytes, for Processor.predict() without Python
// protobuf objects: encoding copies each array once into the request, decoding once into new arrays.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <string_view>
#include <vector>

namespace processor_binding {

namespace py = pybind11;

// Serializes a PredictRequest. `inputs` maps names to numpy arrays (C-contiguous arrays of bool,
// int8/16/32/64, uint8, float32/64, or bytes/str objects). Raises TypeError for other dtypes.
std::string EncodeRequest(const py::dict& inputs, const std::vector<std::string>& output_filter,
                          const std::string& signature_name);

// Decodes a PredictResponse into {name: numpy array}; strings become object arrays of bytes.
py::dict DecodeResponse(std::string_view response);

}  // namespace processor_binding
