// TF Serving's PredictResponse: output tensors sized first, then written once into one malloc'd buffer,
// each as Tensor::AsProtoField writes it (dtype, tensor_shape, values packed in the dtype's field).
#include <tensorflow/c/tf_tstring.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "codec/tf_serving_codec.h"
#include "common/dtypes.h"
#include "common/quote.h"
#include "common/tsan_annotations.h"
#include "common/wire_format.h"

namespace processor {
namespace {

namespace tp = tensor_proto;

// The field a dtype's values are written in; 0 for a dtype this format does not carry.
uint32_t ValueField(TF_DataType dtype) {
  switch (dtype) {
    case TF_FLOAT: return tp::kFloatVal;
    case TF_DOUBLE: return tp::kDoubleVal;
    case TF_INT32:
    case TF_UINT8:
    case TF_INT16:
    case TF_INT8:
    case TF_UINT16: return tp::kIntVal;
    case TF_STRING: return tp::kStringVal;
    case TF_INT64: return tp::kInt64Val;
    case TF_BOOL: return tp::kBoolVal;
    case TF_HALF:
    case TF_BFLOAT16: return tp::kHalfVal;
    case TF_UINT32: return tp::kUint32Val;
    case TF_UINT64: return tp::kUint64Val;
    default: return 0;
  }
}

// Calls fn(uint64_t) with each value as its field's varint carries it: int_val sign-extends an int32,
// the unsigned fields zero-extend.
template <typename Fn>
void ForEachVarintValue(TF_DataType dtype, const void* data, int64_t n, Fn&& fn) {
  auto each = [&](const auto* values, auto widen) {
    for (int64_t i = 0; i < n; ++i) fn(widen(values[i]));
  };
  const auto signed_widen = [](auto v) { return static_cast<uint64_t>(static_cast<int64_t>(v)); };
  const auto unsigned_widen = [](auto v) { return static_cast<uint64_t>(v); };
  switch (dtype) {
    case TF_INT32: each(static_cast<const int32_t*>(data), signed_widen); break;
    case TF_UINT8: each(static_cast<const uint8_t*>(data), unsigned_widen); break;
    case TF_INT16: each(static_cast<const int16_t*>(data), signed_widen); break;
    case TF_INT8: each(static_cast<const int8_t*>(data), signed_widen); break;
    case TF_UINT16:
    case TF_HALF:
    case TF_BFLOAT16: each(static_cast<const uint16_t*>(data), unsigned_widen); break;
    case TF_INT64: each(static_cast<const int64_t*>(data), signed_widen); break;
    case TF_BOOL: each(static_cast<const bool*>(data), [](bool v) { return uint64_t{v}; }); break;
    case TF_UINT32: each(static_cast<const uint32_t*>(data), unsigned_widen); break;
    case TF_UINT64: each(static_cast<const uint64_t*>(data), unsigned_widen); break;
    default: break;
  }
}

// The payload of one tensor's value field (packed), or for strings the bytes of all its string_val
// fields; 0 elements write nothing (proto3).
size_t ValuesPayload(TF_DataType dtype, const void* data, int64_t n) {
  switch (dtype) {
    case TF_FLOAT: return 4 * n;
    case TF_DOUBLE: return 8 * n;
    case TF_STRING: {
      const TF_TString* strings = static_cast<const TF_TString*>(data);
      size_t size = 0;
      for (int64_t i = 0; i < n; ++i) size += wire::LengthDelimitedSize(TF_TString_GetSize(&strings[i]));
      return size;
    }
    default: {
      size_t payload = 0;
      ForEachVarintValue(dtype, data, n, [&](uint64_t v) { payload += wire::VarintSize(v); });
      return payload;
    }
  }
}

// The value field's bytes: uint32_val and uint64_val (fields 16, 17) take two-byte tags.
size_t ValuesSize(TF_DataType dtype, uint32_t field, int64_t n, size_t payload) {
  if (n == 0) return 0;
  if (dtype == TF_STRING) return payload;
  return wire::VarintSize(wire::Tag(field, wire::kLengthDelimited)) + wire::VarintSize(payload) + payload;
}

void PutValues(wire::Writer& w, TF_DataType dtype, uint32_t field, const void* data, int64_t n, size_t payload) {
  if (n == 0) return;
  if (dtype == TF_STRING) {
    const TF_TString* strings = static_cast<const TF_TString*>(data);
    for (int64_t i = 0; i < n; ++i) {
      w.Bytes(field, std::string_view(TF_TString_GetDataPointer(&strings[i]), TF_TString_GetSize(&strings[i])));
    }
    return;
  }
  w.LengthDelimitedHeader(field, payload);
  if (dtype == TF_FLOAT || dtype == TF_DOUBLE) w.Raw(data, payload);
  else ForEachVarintValue(dtype, data, n, [&](uint64_t v) { w.Varint(v); });
}

struct EncodedTensor {
  std::string_view name;
  TF_DataType dtype;
  uint32_t field;
  const void* data;
  size_t first_dim, rank;  // its dims in the encoder's list of all outputs' dims
  int64_t elements;
  size_t shape_message;   // TensorShapeProto body
  size_t values_payload;  // ValuesPayload
  size_t values_size;     // the value field(s), tags included
  size_t tensor_message;  // TensorProto body
  size_t entry_message;   // map entry body
};

size_t DimMessage(int64_t dim) { return dim ? 1 + wire::VarintSize(static_cast<uint64_t>(dim)) : 0; }

}  // namespace

Status EncodeTfServingPredictResponse(const std::vector<std::string_view>& names, const OwnedTensors& tensors,
                                      const ResponseModelSpec& model_spec, void** data, int* size) {
  ReadingTensorFlowOutputs outputs_written_by_tensorflow;
  SmallVector<EncodedTensor, 8> plan;
  SmallVector<int64_t, 16> dims;
  size_t total = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    TF_Tensor* tensor = tensors[i];
    const int rank = TF_NumDims(tensor);
    EncodedTensor t{names[i], TF_TensorType(tensor), 0, TF_TensorData(tensor), dims.size(), size_t(rank), 1, 0, 0, 0, 0, 0};
    t.field = ValueField(t.dtype);
    if (t.field == 0) {
      return Status::Internal("output " + Quote(t.name) + ": a TensorProto cannot carry dtype " +
                              std::to_string(static_cast<int>(t.dtype)) + " here");
    }
    for (int d = 0; d < rank; ++d) {
      const int64_t dim = TF_Dim(tensor, d);
      dims.push_back(dim);
      t.elements *= dim;
      t.shape_message += wire::LengthDelimitedSize(DimMessage(dim));
    }
    t.values_payload = ValuesPayload(t.dtype, t.data, t.elements);
    t.values_size = ValuesSize(t.dtype, t.field, t.elements, t.values_payload);
    t.tensor_message = 1 + wire::VarintSize(t.dtype) + wire::LengthDelimitedSize(t.shape_message) + t.values_size;
    t.entry_message = wire::LengthDelimitedSize(t.name.size()) + wire::LengthDelimitedSize(t.tensor_message);
    total += wire::LengthDelimitedSize(t.entry_message);
    plan.push_back(t);
  }
  // model_spec: name, version (an Int64Value, present for version 0 too), signature_name; proto3 leaves
  // empty strings and zeros out.
  const size_t version_message = model_spec.version > 0 ? 1 + wire::VarintSize(model_spec.version) : 0;
  size_t spec_message = 0;
  if (!model_spec.name.empty()) spec_message += wire::LengthDelimitedSize(model_spec.name.size());
  if (model_spec.version >= 0) spec_message += wire::LengthDelimitedSize(version_message);
  if (!model_spec.signature_name.empty()) spec_message += wire::LengthDelimitedSize(model_spec.signature_name.size());
  total += wire::LengthDelimitedSize(spec_message);
  if (total > static_cast<size_t>(INT32_MAX)) {
    return Status::Internal("the response would be " + std::to_string(total) + " bytes, more than the ABI's int size");
  }
  uint8_t* buffer = static_cast<uint8_t*>(std::malloc(total));
  if (!buffer) return Status::Internal("out of memory for a " + std::to_string(total) + "-byte response");
  wire::Writer w(buffer);
  for (const EncodedTensor& t : plan) {
    w.LengthDelimitedHeader(1, t.entry_message);  // PredictResponse.outputs entry
    w.Bytes(1, t.name);                           // key
    w.LengthDelimitedHeader(2, t.tensor_message);  // value: TensorProto
    w.Varint(wire::Tag(tp::kDtype, wire::kVarint));
    w.Varint(t.dtype);
    w.LengthDelimitedHeader(tp::kTensorShape, t.shape_message);  // present for a scalar too, as AsProtoField writes it
    for (size_t d = t.first_dim; d < t.first_dim + t.rank; ++d) {
      w.LengthDelimitedHeader(2, DimMessage(dims[d]));  // TensorShapeProto.dim
      if (dims[d]) {
        w.Varint(wire::Tag(1, wire::kVarint));
        w.Varint(static_cast<uint64_t>(dims[d]));
      }
    }
    PutValues(w, t.dtype, t.field, t.data, t.elements, t.values_payload);
  }
  w.LengthDelimitedHeader(2, spec_message);  // PredictResponse.model_spec
  if (!model_spec.name.empty()) w.Bytes(1, model_spec.name);
  if (model_spec.version >= 0) {
    w.LengthDelimitedHeader(2, version_message);
    if (version_message) {
      w.Varint(wire::Tag(1, wire::kVarint));
      w.Varint(static_cast<uint64_t>(model_spec.version));
    }
  }
  if (!model_spec.signature_name.empty()) w.Bytes(3, model_spec.signature_name);
  if (static_cast<size_t>(w.position() - buffer) != total) {
    std::free(buffer);
    return Status::Internal("response size mismatch while encoding");
  }
  *data = buffer;
  *size = static_cast<int>(total);
  return Status::Ok();
}

}  // namespace processor
