// The two responses: DeepRec's PredictResponse (each output an ArrayProto) and TF Serving's (each a
// TensorProto, as Tensor::AsProtoField writes it, then the response's model_spec). Both are sized
// first, then written once into one malloc'd buffer, each output as a map entry {1: name, 2: message}
// whose message is {1: dtype, 2: shape, values}; the formats differ only in the shape's message and the
// value fields' numbers (ArrayProtoFormat, TensorProtoFormat).
#include <tensorflow/c/tf_tstring.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "codec/predict_codec.h"
#include "codec/tf_serving_codec.h"
#include "common/dtypes.h"
#include "common/quote.h"
#include "common/tsan_annotations.h"
#include "common/wire_format.h"

namespace processor {
namespace {

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

// The value field's bytes: TensorProto's uint32_val and uint64_val (fields 16, 17) take two-byte tags.
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

// DeepRec's ArrayProto (protos/predict.proto): ArrayShape { repeated int64 dim = 1 [packed] }, present
// for a scalar too; values in the fields of common/dtypes.h.
struct ArrayProtoFormat {
  static constexpr const char* kMessage = "an ArrayProto";
  static uint32_t ValueField(TF_DataType dtype) { return ValueFieldForDtype(dtype); }
  static size_t DimsPayload(const int64_t* dims, size_t rank) {
    size_t payload = 0;
    for (size_t d = 0; d < rank; ++d) payload += wire::VarintSize(static_cast<uint64_t>(dims[d]));
    return payload;
  }
  static size_t ShapeMessage(const int64_t* dims, size_t rank) {
    const size_t payload = DimsPayload(dims, rank);
    return payload ? wire::LengthDelimitedSize(payload) : 0;
  }
  static void PutShape(wire::Writer& w, const int64_t* dims, size_t rank) {
    if (rank == 0) return;
    w.LengthDelimitedHeader(1, DimsPayload(dims, rank));
    for (size_t d = 0; d < rank; ++d) w.Varint(static_cast<uint64_t>(dims[d]));
  }
};

// TF Serving's TensorProto (tensorflow/core/framework/tensor.proto): TensorShapeProto { repeated Dim
// dim = 2 } with Dim { int64 size = 1 }, present for a scalar too, as Tensor::AsProtoField writes it.
struct TensorProtoFormat {
  static constexpr const char* kMessage = "a TensorProto";
  static uint32_t ValueField(TF_DataType dtype) {
    namespace tp = tensor_proto;
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
  static size_t DimMessage(int64_t dim) { return dim ? 1 + wire::VarintSize(static_cast<uint64_t>(dim)) : 0; }
  static size_t ShapeMessage(const int64_t* dims, size_t rank) {
    size_t size = 0;
    for (size_t d = 0; d < rank; ++d) size += wire::LengthDelimitedSize(DimMessage(dims[d]));
    return size;
  }
  static void PutShape(wire::Writer& w, const int64_t* dims, size_t rank) {
    for (size_t d = 0; d < rank; ++d) {
      w.LengthDelimitedHeader(2, DimMessage(dims[d]));
      if (dims[d]) {
        w.Varint(wire::Tag(1, wire::kVarint));
        w.Varint(static_cast<uint64_t>(dims[d]));
      }
    }
  }
};

// One output as the encoder needs it: what TF says about the tensor, asked once (each TF_Dim or
// TF_TensorType is a call into TF through its tensor interface), and the sizes of its messages.
// Buys: with one TF_Status per thread, -4.7 % instructions at batch 1 (make profile).
struct EncodedTensor {
  std::string_view name;
  TF_DataType dtype;
  uint32_t field;
  const void* data;
  size_t first_dim, rank;  // its dims in the encoder's list of all outputs' dims
  int64_t elements;
  size_t shape_message;   // the shape's message body
  size_t values_payload;  // ValuesPayload
  size_t message;         // the tensor's message body
  size_t entry_message;   // its map entry's body
};

// A response of tensors[i] named names[i] in Format, followed by `trailer_size` bytes that
// put_trailer(writer) writes, in a buffer from malloc().
template <typename Format, typename PutTrailer>
Status EncodeResponse(const std::vector<std::string_view>& names, const OwnedTensors& tensors, size_t trailer_size,
                      PutTrailer&& put_trailer, void** data, int* size) {
  ReadingTensorFlowOutputs outputs_written_by_tensorflow;
  SmallVector<EncodedTensor, 8> plan;
  SmallVector<int64_t, 16> dims;
  size_t total = trailer_size;
  for (size_t i = 0; i < names.size(); ++i) {
    TF_Tensor* tensor = tensors[i];
    const int rank = TF_NumDims(tensor);
    EncodedTensor t{names[i], TF_TensorType(tensor), 0, TF_TensorData(tensor), dims.size(), size_t(rank), 1, 0, 0, 0, 0};
    t.field = Format::ValueField(t.dtype);
    if (t.field == 0) {
      return Status::Internal("output " + Quote(t.name) + ": " + Format::kMessage + " cannot carry dtype " +
                              DataTypeName(t.dtype) + " (" + std::to_string(static_cast<int>(t.dtype)) + ")");
    }
    for (int d = 0; d < rank; ++d) {
      const int64_t dim = TF_Dim(tensor, d);
      dims.push_back(dim);
      t.elements *= dim;
    }
    t.shape_message = Format::ShapeMessage(dims.data() + t.first_dim, t.rank);
    t.values_payload = ValuesPayload(t.dtype, t.data, t.elements);
    t.message = 1 + wire::VarintSize(t.dtype) + wire::LengthDelimitedSize(t.shape_message) +
                ValuesSize(t.dtype, t.field, t.elements, t.values_payload);
    t.entry_message = wire::LengthDelimitedSize(t.name.size()) + wire::LengthDelimitedSize(t.message);
    total += wire::LengthDelimitedSize(t.entry_message);
    plan.push_back(t);
  }
  if (total > static_cast<size_t>(INT32_MAX)) {
    return Status::Internal("the response would be " + std::to_string(total) + " bytes, more than the ABI's int size");
  }
  uint8_t* buffer = static_cast<uint8_t*>(std::malloc(total ? total : 1));
  if (!buffer) return Status::Internal("out of memory for a " + std::to_string(total) + "-byte response");
  wire::Writer w(buffer);
  for (const EncodedTensor& t : plan) {
    w.LengthDelimitedHeader(1, t.entry_message);  // PredictResponse.outputs entry
    w.Bytes(1, t.name);                           // key
    w.LengthDelimitedHeader(2, t.message);        // value
    w.Varint(wire::Tag(1, wire::kVarint));        // dtype
    w.Varint(t.dtype);
    w.LengthDelimitedHeader(2, t.shape_message);  // shape
    Format::PutShape(w, dims.data() + t.first_dim, t.rank);
    PutValues(w, t.dtype, t.field, t.data, t.elements, t.values_payload);
  }
  put_trailer(w);
  if (static_cast<size_t>(w.position() - buffer) != total) {
    std::free(buffer);
    return Status::Internal("response size mismatch while encoding");
  }
  *data = buffer;
  *size = static_cast<int>(total);
  return Status::Ok();
}

}  // namespace

Status EncodePredictResponse(const std::vector<std::string_view>& names, const OwnedTensors& tensors, void** data,
                             int* size) {
  return EncodeResponse<ArrayProtoFormat>(names, tensors, 0, [](wire::Writer&) {}, data, size);
}

Status EncodeTfServingPredictResponse(const std::vector<std::string_view>& names, const OwnedTensors& tensors,
                                      const ResponseModelSpec& model_spec, void** data, int* size) {
  // model_spec: name, version (an Int64Value, present for version 0 too), signature_name; proto3 leaves
  // empty strings and zeros out.
  const size_t version_message = model_spec.version > 0 ? 1 + wire::VarintSize(model_spec.version) : 0;
  size_t spec_message = 0;
  if (!model_spec.name.empty()) spec_message += wire::LengthDelimitedSize(model_spec.name.size());
  if (model_spec.version >= 0) spec_message += wire::LengthDelimitedSize(version_message);
  if (!model_spec.signature_name.empty()) spec_message += wire::LengthDelimitedSize(model_spec.signature_name.size());
  const auto put_model_spec = [&](wire::Writer& w) {
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
  };
  return EncodeResponse<TensorProtoFormat>(names, tensors, wire::LengthDelimitedSize(spec_message), put_model_spec,
                                           data, size);
}

}  // namespace processor
