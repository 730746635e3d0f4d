#include "numpy_codec.h"

#include <pybind11/stl.h>

#include <cstring>
#include <stdexcept>

#include "common/dtypes.h"
#include "common/wire_format.h"

namespace processor_binding {
namespace {

namespace wire = processor::wire;
using namespace pybind11::literals;

// ArrayDataType numbers (protos/predict.proto), as common/dtypes.h's table has them.
enum : int { kFloat = 1, kDouble = 2, kInt32 = 3, kUint8 = 4, kInt16 = 5, kInt8 = 6, kString = 7, kInt64 = 9, kBool = 10 };

int DtypeOf(const py::array& array) {
  const char kind = array.dtype().kind();
  if (kind == 'O' || kind == 'S' || kind == 'U') return kString;
  for (const processor::CarriedDtype& dtype : processor::kCarriedDtypes) {
    if (dtype.numpy_kind == kind && dtype.numpy_itemsize == array.itemsize()) return dtype.number;
  }
  throw py::type_error("numpy dtype " + std::string(py::str(array.dtype())) + " has no ArrayDataType");
}

void PutVarint(std::string* out, uint64_t value) { wire::AppendVarint(out, value); }

void PutTag(std::string* out, uint32_t field, wire::WireType type) { PutVarint(out, wire::Tag(field, type)); }

void PutLengthDelimited(std::string* out, uint32_t field, const std::string& payload) {
  PutTag(out, field, wire::kLengthDelimited);
  PutVarint(out, payload.size());
  out->append(payload);
}

template <typename T>
void PutPackedVarints(std::string* out, uint32_t field, const T* values, py::ssize_t n) {
  if (n == 0) return;
  std::string payload;
  payload.reserve(n * 2);
  for (py::ssize_t i = 0; i < n; ++i) PutVarint(&payload, static_cast<uint64_t>(static_cast<int64_t>(values[i])));
  PutLengthDelimited(out, field, payload);
}

std::string EncodeArray(const py::handle& value) {
  py::array array = py::array::ensure(value, py::array::c_style);
  if (!array) throw py::type_error("inputs must be numpy arrays");
  const int dtype = DtypeOf(array);
  std::string out;
  PutTag(&out, processor::kDtype, wire::kVarint);
  PutVarint(&out, dtype);
  std::string dims, array_shape;  // a scalar still gets an (empty) array_shape
  for (py::ssize_t d = 0; d < array.ndim(); ++d) PutVarint(&dims, static_cast<uint64_t>(array.shape(d)));
  if (!dims.empty()) PutLengthDelimited(&array_shape, 1, dims);
  PutLengthDelimited(&out, processor::kArrayShape, array_shape);
  const py::ssize_t n = array.size();
  const void* data = array.data();
  const uint32_t field = processor::ValueFieldForDtype(dtype);
  switch (dtype) {
    case kFloat:
    case kDouble:
      if (n) PutLengthDelimited(&out, field, std::string(static_cast<const char*>(data), n * array.itemsize()));
      break;
    case kInt64: PutPackedVarints(&out, field, static_cast<const int64_t*>(data), n); break;
    case kInt32: PutPackedVarints(&out, field, static_cast<const int32_t*>(data), n); break;
    case kInt16: PutPackedVarints(&out, field, static_cast<const int16_t*>(data), n); break;
    case kInt8: PutPackedVarints(&out, field, static_cast<const int8_t*>(data), n); break;
    case kUint8: PutPackedVarints(&out, field, static_cast<const uint8_t*>(data), n); break;
    case kBool: PutPackedVarints(&out, field, static_cast<const bool*>(data), n); break;
    case kString: {
      py::array objects = py::array::ensure(array.attr("astype")("O").attr("ravel")(), py::array::c_style);
      for (py::handle item : objects) {
        std::string bytes = py::isinstance<py::bytes>(item) ? std::string(py::reinterpret_borrow<py::bytes>(item))
                                                            : std::string(py::str(item));
        PutLengthDelimited(&out, field, bytes);
      }
      break;
    }
    default: break;
  }
  return out;
}

py::dtype NumpyDtype(int dtype) {
  switch (dtype) {
    case kFloat: return py::dtype::of<float>();
    case kDouble: return py::dtype::of<double>();
    case kInt64: return py::dtype::of<int64_t>();
    case kInt32: return py::dtype::of<int32_t>();
    case kInt16: return py::dtype::of<int16_t>();
    case kInt8: return py::dtype::of<int8_t>();
    case kUint8: return py::dtype::of<uint8_t>();
    case kBool: return py::dtype::of<bool>();
    default: throw py::type_error("the response holds dtype " + std::to_string(dtype) + ", which numpy cannot take");
  }
}

py::object DecodeArray(std::string_view bytes) {
  wire::Reader r(bytes);
  uint32_t field, wire_type;
  int dtype = 0;
  std::vector<py::ssize_t> shape;
  std::vector<std::string_view> values;  // packed runs, or single varints/strings
  std::vector<uint32_t> value_types;
  while (r.NextField(&field, &wire_type)) {
    if (field == 1 && wire_type == wire::kVarint) {
      dtype = static_cast<int>(r.Varint());
    } else if (field == 2 && wire_type == wire::kLengthDelimited) {
      wire::Reader dims(r.LengthDelimited());
      uint32_t f, w;
      while (dims.NextField(&f, &w)) {
        if (f == 1 && w == wire::kLengthDelimited) {
          wire::Reader packed(dims.LengthDelimited());
          while (packed.remaining()) shape.push_back(static_cast<py::ssize_t>(packed.Varint()));
        } else if (f == 1 && w == wire::kVarint) {
          shape.push_back(static_cast<py::ssize_t>(dims.Varint()));
        } else {
          dims.Skip(w);
        }
      }
    } else if (field >= 3 && field <= 8) {
      values.push_back(wire_type == wire::kLengthDelimited ? r.LengthDelimited() : r.RawVarint());
      value_types.push_back(wire_type);
    } else {
      r.Skip(wire_type);
    }
  }
  if (!r.ok()) throw py::value_error("malformed ArrayProto in the response");
  py::ssize_t n = 1;
  for (py::ssize_t d : shape) n *= d;
  if (dtype == kString) {
    py::list items;
    for (std::string_view s : values) items.append(py::bytes(s.data(), s.size()));
    if (static_cast<py::ssize_t>(items.size()) != n) throw py::value_error("the response's value count does not match its shape");
    py::object numpy = py::module_::import("numpy");
    return numpy.attr("array")(items, "dtype"_a = "O").attr("reshape")(py::tuple(py::cast(shape)));
  }
  py::array out(NumpyDtype(dtype), shape);
  char* dst = static_cast<char*>(out.mutable_data());
  const py::ssize_t item = out.itemsize();
  py::ssize_t written = 0;
  for (size_t v = 0; v < values.size(); ++v) {
    if (dtype == kFloat || dtype == kDouble) {
      const size_t bytes = std::min<size_t>(values[v].size(), (n - written) * item);
      std::memcpy(dst + written * item, values[v].data(), bytes);
      written += bytes / item;
      continue;
    }
    wire::Reader varints(values[v]);
    while (varints.remaining() && written < n) {
      const uint64_t raw = varints.Varint();
      char* at = dst + written++ * item;
      switch (dtype) {
        case kInt64: { int64_t x = static_cast<int64_t>(raw); std::memcpy(at, &x, 8); break; }
        case kInt32: { int32_t x = static_cast<int32_t>(raw); std::memcpy(at, &x, 4); break; }
        case kInt16: { int16_t x = static_cast<int16_t>(raw); std::memcpy(at, &x, 2); break; }
        case kInt8: { int8_t x = static_cast<int8_t>(raw); std::memcpy(at, &x, 1); break; }
        case kUint8: { uint8_t x = static_cast<uint8_t>(raw); std::memcpy(at, &x, 1); break; }
        case kBool: { bool x = raw != 0; std::memcpy(at, &x, 1); break; }
        default: break;
      }
    }
  }
  if (written != n) throw py::value_error("the response's value count does not match its shape");
  return std::move(out);
}

}  // namespace

std::string EncodeRequest(const py::dict& inputs, const std::vector<std::string>& output_filter,
                          const std::string& signature_name) {
  std::string out;
  if (!signature_name.empty()) PutLengthDelimited(&out, 1, signature_name);
  for (auto [name, value] : inputs) {
    std::string entry;
    PutLengthDelimited(&entry, 1, py::str(name));
    PutLengthDelimited(&entry, 2, EncodeArray(value));
    PutLengthDelimited(&out, 2, entry);
  }
  for (const std::string& name : output_filter) PutLengthDelimited(&out, 3, name);
  return out;
}

py::dict DecodeResponse(std::string_view response) {
  py::dict outputs;
  wire::Reader r(response);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field != 1 || wire_type != wire::kLengthDelimited) {
      r.Skip(wire_type);
      continue;
    }
    wire::Reader entry(r.LengthDelimited());
    std::string_view key, value;
    uint32_t f, w;
    while (entry.NextField(&f, &w)) {
      if (f == 1 && w == wire::kLengthDelimited) key = entry.LengthDelimited();
      else if (f == 2 && w == wire::kLengthDelimited) value = entry.LengthDelimited();
      else entry.Skip(w);
    }
    outputs[py::str(key.data(), key.size())] = DecodeArray(value);
  }
  if (!r.ok()) throw py::value_error("malformed PredictResponse");
  return outputs;
}

}  // namespace processor_binding
