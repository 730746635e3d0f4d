// TF Serving's PredictRequest: parsed into TensorProtoViews (no value copied), then each view copied
// once into a TF_Tensor, following protobuf's parsing rules and Tensor::FromProto's filling rules
// (tf_serving_codec.h says where this is stricter).
#include <tensorflow/c/tf_tstring.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <type_traits>

#include "codec/packed_varints.h"
#include "codec/tf_serving_codec.h"
#include "common/dtypes.h"
#include "common/shape_string.h"
#include "common/quote.h"
#include "common/wire_format.h"

namespace processor {
namespace {

namespace tp = tensor_proto;
using wire::Reader;

constexpr const char* kFieldNames[tp::kFieldCount] = {
    "",          "dtype",       "tensor_shape",        "version_number", "tensor_content",
    "float_val", "double_val",  "int_val",             "string_val",     "scomplex_val",
    "int64_val", "bool_val",    "dcomplex_val",        "half_val",       "resource_handle_val",
    "variant_val", "uint32_val", "uint64_val",         "float8_val"};

// Whether protobuf reads an occurrence of TensorProto `field` with `wire_type` as that field (packed or
// not for repeated scalars); other occurrences are unknown fields to it, skipped here likewise.
bool ReadsAs(uint32_t field, uint32_t wire_type) {
  switch (field) {
    case tp::kDtype:
    case tp::kVersionNumber: return wire_type == wire::kVarint;
    case tp::kFloatVal:
    case tp::kScomplexVal: return wire_type == wire::kLengthDelimited || wire_type == wire::kFixed32;
    case tp::kDoubleVal:
    case tp::kDcomplexVal: return wire_type == wire::kLengthDelimited || wire_type == wire::kFixed64;
    case tp::kIntVal:
    case tp::kInt64Val:
    case tp::kBoolVal:
    case tp::kHalfVal:
    case tp::kUint32Val:
    case tp::kUint64Val: return wire_type == wire::kLengthDelimited || wire_type == wire::kVarint;
    default: return wire_type == wire::kLengthDelimited;  // shape, content, strings, messages
  }
}

size_t FixedWidth(uint32_t field) {
  switch (field) {
    case tp::kFloatVal:
    case tp::kScomplexVal: return 4;
    case tp::kDoubleVal:
    case tp::kDcomplexVal: return 8;
    default: return 0;
  }
}

bool IsVarintField(uint32_t field) {
  return field == tp::kIntVal || field == tp::kInt64Val || field == tp::kBoolVal || field == tp::kHalfVal || field == tp::kUint32Val ||
         field == tp::kUint64Val;
}

// A dtype this format carries: the field its values travel in and its element size.
struct Carried {
  uint32_t field;
  size_t element_size;
};

bool CarriedByTensorProto(int dtype, Carried* carried) {
  switch (dtype) {
    case TF_FLOAT: *carried = {tp::kFloatVal, 4}; return true;
    case TF_DOUBLE: *carried = {tp::kDoubleVal, 8}; return true;
    case TF_INT32: *carried = {tp::kIntVal, 4}; return true;
    case TF_UINT8: *carried = {tp::kIntVal, 1}; return true;
    case TF_INT16: *carried = {tp::kIntVal, 2}; return true;
    case TF_INT8: *carried = {tp::kIntVal, 1}; return true;
    case TF_UINT16: *carried = {tp::kIntVal, 2}; return true;
    case TF_STRING: *carried = {tp::kStringVal, sizeof(TF_TString)}; return true;
    case TF_INT64: *carried = {tp::kInt64Val, 8}; return true;
    case TF_BOOL: *carried = {tp::kBoolVal, 1}; return true;
    case TF_HALF:
    case TF_BFLOAT16: *carried = {tp::kHalfVal, 2}; return true;
    case TF_UINT32: *carried = {tp::kUint32Val, 4}; return true;
    case TF_UINT64: *carried = {tp::kUint64Val, 8}; return true;
    default: return false;
  }
}

std::string DtypeName(int dtype) {
  if (dtype == TF_UINT32) return "DT_UINT32";
  if (dtype == TF_UINT64) return "DT_UINT64";
  const char* name = DataTypeName(dtype);
  return std::string(name) == "DT_INVALID" && dtype != 0 ? "dtype " + std::to_string(dtype) : name;
}

// Appends a TensorShapeProto's dims (a repeated tensor_shape merges them, as in protobuf).
Status ParseShape(std::string_view bytes, TensorProtoView* view) {
  Reader r(bytes);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field == 2 && wire_type == wire::kLengthDelimited) {  // Dim
      Reader dim(r.LengthDelimited());
      int64_t size = 0;
      uint32_t f, w;
      while (dim.NextField(&f, &w)) {
        if (f == 1 && w == wire::kVarint) size = static_cast<int64_t>(dim.Varint());
        else dim.Skip(w);
      }
      if (!dim.ok()) return Status::InvalidArgument("malformed tensor_shape dim");
      view->dims.push_back(size);
    } else if (field == 3 && wire_type == wire::kVarint) {
      view->unknown_rank = r.Varint() != 0;
    } else {
      r.Skip(wire_type);
    }
  }
  if (!r.ok()) return Status::InvalidArgument("malformed tensor_shape");
  return Status::Ok();
}

Status CountValues(Reader& r, uint32_t field, uint32_t wire_type, int64_t* count) {
  if (wire_type != wire::kLengthDelimited) {  // one unpacked value
    r.Skip(wire_type);
    *count += 1;
    return Status::Ok();
  }
  const std::string_view packed = r.LengthDelimited();
  if (const size_t width = FixedWidth(field)) {
    if (packed.size() % width) {
      return Status::InvalidArgument("packed length " + std::to_string(packed.size()) + " is not a multiple of " +
                                     std::to_string(width));
    }
    *count += packed.size() / width;
    return Status::Ok();
  }
  if (IsVarintField(field)) return codec::CountPackedVarints(packed, count);
  *count += 1;  // strings and messages: one per occurrence
  return Status::Ok();
}

Status ParseTensor(std::string_view bytes, TensorProtoView* view) {
  view->pieces.push_back(bytes);
  Reader r(bytes);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field >= tp::kFieldCount || !ReadsAs(field, wire_type)) {
      r.Skip(wire_type);
      continue;
    }
    Status status;
    switch (field) {
      case tp::kDtype: view->dtype = static_cast<int>(r.Varint()); break;
      case tp::kTensorShape: status = ParseShape(r.LengthDelimited(), view); break;
      case tp::kVersionNumber: r.Varint(); break;
      case tp::kTensorContent: view->tensor_content = r.LengthDelimited(); break;
      default: status = CountValues(r, field, wire_type, &view->counts[field]);
    }
    if (!status.ok()) return status.WithContext(kFieldNames[field]);
  }
  if (!r.ok()) return Status::InvalidArgument("malformed TensorProto");
  return Status::Ok();
}

// A map<string, TensorProto> entry: key and value in any order; several value occurrences merge.
Status ParseInputEntry(std::string_view bytes, std::string_view* key, TensorProtoView* view) {
  Reader r(bytes);
  uint32_t field, wire_type;
  int values = 0;
  while (r.NextField(&field, &wire_type)) {
    if (field == 1 && wire_type == wire::kLengthDelimited) *key = r.LengthDelimited();
    else if (field == 2 && wire_type == wire::kLengthDelimited) {
      r.LengthDelimited();
      ++values;
    } else {
      r.Skip(wire_type);
    }
  }
  if (!r.ok()) return Status::InvalidArgument("malformed inputs map entry");
  if (values == 0) return Status::Ok();  // an empty TensorProto: DT_INVALID, refused when bound
  Reader again(bytes);
  while (again.NextField(&field, &wire_type)) {
    if (field == 2 && wire_type == wire::kLengthDelimited) {
      PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(ParseTensor(again.LengthDelimited(), view), "input " + Quote(*key));
    } else {
      again.Skip(wire_type);
    }
  }
  return Status::Ok();
}

// Calls visit(reader, wire_type) at each occurrence of `field` that protobuf reads as the field.
template <typename Visit>
void ForEachOccurrence(const TensorProtoView& view, uint32_t field, Visit&& visit) {
  wire::ForEachOccurrence(view.pieces, field, [](uint32_t f, uint32_t w) { return ReadsAs(f, w); }, visit);
}

template <typename Fn>
void ForEachVarint(const TensorProtoView& view, uint32_t field, Fn&& fn) {
  ForEachOccurrence(view, field, [&](Reader& r, uint32_t wire_type) {
    if (wire_type == wire::kLengthDelimited) codec::ForEachPackedVarint(r.LengthDelimited(), fn);
    else fn(r.Varint());
  });
}

// Varint values into T, each checked against [lo, hi] after the wire type's cast (int_val and half_val
// are int32 on the wire, the others their own width).
template <typename T, typename Wire>
Status CopyVarints(const TensorProtoView& view, uint32_t field, int64_t lo, int64_t hi, T* out) {
  bool in_range = true;
  int64_t bad = 0;
  ForEachVarint(view, field, [&](uint64_t raw) {
    const auto v = static_cast<Wire>(raw);
    if constexpr (std::is_signed_v<Wire>) {
      if (v < lo || v > hi) {
        if (in_range) bad = v;
        in_range = false;
      }
    }
    *out++ = static_cast<T>(v);
  });
  if (!in_range) return Status::InvalidArgument("value " + std::to_string(bad) + " is out of range");
  return Status::Ok();
}

void CopyFixed(const TensorProtoView& view, uint32_t field, size_t width, void* out) {
  char* dst = static_cast<char*>(out);
  ForEachOccurrence(view, field, [&](Reader& r, uint32_t wire_type) {
    const std::string_view bytes = wire_type == wire::kLengthDelimited ? r.LengthDelimited() : r.Fixed(width);
    if (!bytes.empty()) std::memcpy(dst, bytes.data(), bytes.size());
    dst += bytes.size();
  });
}

void CopyStrings(const TensorProtoView& view, TF_TString* out) {
  ForEachOccurrence(view, tp::kStringVal, [&](Reader& r, uint32_t) {
    const std::string_view s = r.LengthDelimited();
    TF_TString_Copy(out++, s.data(), s.size());
  });
}

// Tensor::FromProto's fill: fewer values than elements repeat the last one; none at all are zeros.
void FillRest(TF_DataType dtype, size_t element_size, int64_t sent, int64_t n, void* data) {
  if (sent >= n) return;
  char* bytes = static_cast<char*>(data);
  if (dtype == TF_STRING) {
    TF_TString* strings = static_cast<TF_TString*>(data);
    if (sent == 0) return;  // the strings are empty already
    const TF_TString& last = strings[sent - 1];
    for (int64_t i = sent; i < n; ++i) {
      TF_TString_Copy(&strings[i], TF_TString_GetDataPointer(&last), TF_TString_GetSize(&last));
    }
    return;
  }
  if (sent == 0) {
    std::memset(bytes, 0, n * element_size);
    return;
  }
  const char* last = bytes + (sent - 1) * element_size;
  for (int64_t i = sent; i < n; ++i) std::memcpy(bytes + i * element_size, last, element_size);
}

Status CopyValues(const TensorProtoView& view, TF_DataType dtype, const Carried& carried, void* out) {
  switch (dtype) {
    case TF_FLOAT:
    case TF_DOUBLE: CopyFixed(view, carried.field, carried.element_size, out); return Status::Ok();
    case TF_INT32:
      return CopyVarints<int32_t, int32_t>(view, tp::kIntVal, INT32_MIN, INT32_MAX, static_cast<int32_t*>(out));
    case TF_UINT8: return CopyVarints<uint8_t, int32_t>(view, tp::kIntVal, 0, UINT8_MAX, static_cast<uint8_t*>(out));
    case TF_INT16:
      return CopyVarints<int16_t, int32_t>(view, tp::kIntVal, INT16_MIN, INT16_MAX, static_cast<int16_t*>(out));
    case TF_INT8: return CopyVarints<int8_t, int32_t>(view, tp::kIntVal, INT8_MIN, INT8_MAX, static_cast<int8_t*>(out));
    case TF_UINT16:
      return CopyVarints<uint16_t, int32_t>(view, tp::kIntVal, 0, UINT16_MAX, static_cast<uint16_t*>(out));
    case TF_HALF:
    case TF_BFLOAT16:
      return CopyVarints<uint16_t, int32_t>(view, tp::kHalfVal, 0, UINT16_MAX, static_cast<uint16_t*>(out));
    case TF_INT64: return CopyVarints<int64_t, int64_t>(view, tp::kInt64Val, INT64_MIN, INT64_MAX, static_cast<int64_t*>(out));
    case TF_UINT32: return CopyVarints<uint32_t, uint32_t>(view, tp::kUint32Val, 0, 0, static_cast<uint32_t*>(out));
    case TF_UINT64: return CopyVarints<uint64_t, uint64_t>(view, tp::kUint64Val, 0, 0, static_cast<uint64_t*>(out));
    case TF_BOOL: {
      bool* dst = static_cast<bool*>(out);
      ForEachVarint(view, tp::kBoolVal, [&](uint64_t v) { *dst++ = v != 0; });
      return Status::Ok();
    }
    case TF_STRING: CopyStrings(view, static_cast<TF_TString*>(out)); return Status::Ok();
    default: return Status::Internal("unreachable dtype");
  }
}

}  // namespace

Status ParseTfServingPredictRequest(const void* data, size_t size, TfServingRequestView* request) {
  request->Clear();
  if (size > 0 && data == nullptr) return Status::InvalidArgument("input_data is NULL but input_size is " + std::to_string(size));
  Reader r(data, size);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field == 1 && wire_type == wire::kLengthDelimited) {
      PROCESSOR_RETURN_IF_ERROR(ParseModelSpec(r.LengthDelimited(), &request->model_spec));
    } else if (field == 2 && wire_type == wire::kLengthDelimited) {
      auto& entry = request->inputs.emplace_back();
      PROCESSOR_RETURN_IF_ERROR(ParseInputEntry(r.LengthDelimited(), &entry.first, &entry.second));
    } else if (field == 3 && wire_type == wire::kLengthDelimited) {
      request->output_filter.push_back(r.LengthDelimited());
    } else {
      r.Skip(wire_type);
    }
  }
  if (!r.ok()) return Status::InvalidArgument("the request is not a valid PredictRequest (malformed protocol buffer)");
  return Status::Ok();
}

Status ShapeElementCount(const TensorProtoView& tensor, int64_t* count) {
  if (tensor.unknown_rank) return Status::InvalidArgument("tensor_shape has unknown_rank set");
  int64_t n = 1;
  for (int64_t dim : tensor.dims) {
    if (dim < 0) return Status::InvalidArgument("negative dimension " + std::to_string(dim) + " in tensor_shape");
    if (__builtin_mul_overflow(n, dim, &n)) return Status::InvalidArgument("tensor_shape overflows int64");
  }
  *count = n;
  return Status::Ok();
}

Status MakeTensor(const TensorProtoView& view, TensorPtr* tensor, bool* worth_keeping, KeptTensorShape*) {
  if (worth_keeping) *worth_keeping = false;
  tensor->reset();
  if (view.dtype == 0) return Status::InvalidArgument("dtype is not set (DT_INVALID)");
  Carried carried;
  if (!CarriedByTensorProto(view.dtype, &carried)) {
    return Status::InvalidArgument(DtypeName(view.dtype) + " cannot be sent in a TensorProto here");
  }
  int64_t n = 0;
  PROCESSOR_RETURN_IF_ERROR(ShapeElementCount(view, &n));
  const TF_DataType dtype = static_cast<TF_DataType>(view.dtype);
  const bool from_content = !view.tensor_content.empty();  // as Tensor::FromProto decides
  int64_t sent = 0;
  if (from_content) {
    if (dtype == TF_STRING) return Status::InvalidArgument("DT_STRING values belong in string_val, not tensor_content");
    const size_t wanted = static_cast<size_t>(n) * carried.element_size;
    if (view.tensor_content.size() != wanted) {
      return Status::InvalidArgument("tensor_content holds " + std::to_string(view.tensor_content.size()) +
                                     " bytes but shape " + ShapeString(view.dims) + " of " + DtypeName(dtype) +
                                     " needs " + std::to_string(wanted));
    }
  } else {
    for (uint32_t field = tp::kFloatVal; field < static_cast<uint32_t>(tp::kFieldCount); ++field) {
      if (field != carried.field && view.counts[field]) {
        return Status::InvalidArgument(DtypeName(dtype) + " values belong in " + kFieldNames[carried.field] + ", but " +
                                       kFieldNames[field] + " is set");
      }
    }
    sent = view.counts[carried.field];
    if (sent > n) {
      return Status::InvalidArgument("shape " + ShapeString(view.dims) + " holds " + std::to_string(n) + " values but " +
                                     std::to_string(sent) + " were sent in " + kFieldNames[carried.field]);
    }
  }
  TensorPtr t(TF_AllocateTensor(dtype, view.dims.data(), static_cast<int>(view.dims.size()),
                                static_cast<size_t>(n) * carried.element_size));
  if (!t) return Status::Internal("cannot allocate a tensor of " + std::to_string(n) + " elements");
  void* out = TF_TensorData(t.get());
  if (from_content) {
    if (n) std::memcpy(out, view.tensor_content.data(), view.tensor_content.size());
  } else if (n) {
    if (dtype == TF_STRING) {  // the allocation is raw memory: empty strings first, then the values
      TF_TString* strings = static_cast<TF_TString*>(out);
      for (int64_t i = 0; i < n; ++i) TF_TString_Init(&strings[i]);
    }
    PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(CopyValues(view, dtype, carried, out), DtypeName(dtype));
    FillRest(dtype, carried.element_size, sent, n, out);
  }
  *tensor = std::move(t);
  return Status::Ok();
}

}  // namespace processor
