// The dtypes of protos/predict.proto's ArrayDataType (TensorFlow's DataType numbering): the one table
// the data plane keeps of them. The codec, the signature, the numpy binding and the error messages all
// read it; Python's copy (processor/tensors.py) is checked against it by tests/test_codec.py through
// _core.dtype_table().
#pragma once

#include <array>
#include <cstdint>

namespace processor {

// An ArrayProto's fields (protos/predict.proto): where each dtype's values travel.
enum ArrayField : uint32_t {
  kDtype = 1,
  kArrayShape = 2,
  kFloatVal = 3,
  kDoubleVal = 4,
  kIntVal = 5,
  kStringVal = 6,
  kInt64Val = 7,
  kBoolVal = 8,
};

inline constexpr const char* kArrayFieldNames[] = {"", "dtype", "array_shape", "float_val", "double_val", "int_val",
                                                   "string_val", "int64_val", "bool_val"};

// A dtype the protocol carries: its number, the field its values travel in, and the numpy dtype that
// holds them (kind and item size; strings are numpy objects).
struct CarriedDtype {
  int number;
  ArrayField value_field;
  char numpy_kind;
  int numpy_itemsize;
};

inline constexpr CarriedDtype kCarriedDtypes[] = {
    {1, kFloatVal, 'f', 4},  {2, kDoubleVal, 'f', 8}, {3, kIntVal, 'i', 4},  {4, kIntVal, 'u', 1},
    {5, kIntVal, 'i', 2},    {6, kIntVal, 'i', 1},    {7, kStringVal, 'O', 8}, {9, kInt64Val, 'i', 8},
    {10, kBoolVal, 'b', 1},
};

// Every DataType's name, for messages ("DT_FLOAT" for 1).
inline constexpr const char* kDataTypeNames[] = {
    "DT_INVALID",  "DT_FLOAT",    "DT_DOUBLE", "DT_INT32",  "DT_UINT8",   "DT_INT16",      "DT_INT8",
    "DT_STRING",   "DT_COMPLEX64", "DT_INT64", "DT_BOOL",   "DT_QINT8",   "DT_QUINT8",     "DT_QINT32",
    "DT_BFLOAT16", "DT_QINT16",   "DT_QUINT16", "DT_UINT16", "DT_COMPLEX128", "DT_HALF",    "DT_RESOURCE",
    "DT_VARIANT"};
inline constexpr int kDataTypeCount = sizeof(kDataTypeNames) / sizeof(kDataTypeNames[0]);

// "DT_FLOAT" for 1; "DT_INVALID" for numbers it does not know.
inline const char* DataTypeName(int dtype) {
  return dtype >= 0 && dtype < kDataTypeCount ? kDataTypeNames[dtype] : "DT_INVALID";
}

namespace dtypes_internal {
constexpr std::array<uint8_t, kDataTypeCount> ValueFields() {
  std::array<uint8_t, kDataTypeCount> fields{};
  for (const CarriedDtype& dtype : kCarriedDtypes) fields[dtype.number] = static_cast<uint8_t>(dtype.value_field);
  return fields;
}
inline constexpr std::array<uint8_t, kDataTypeCount> kValueFields = ValueFields();
}  // namespace dtypes_internal

// The ArrayProto field a dtype's values travel in, or 0 when the protocol cannot carry the dtype.
inline int ValueFieldForDtype(int dtype) {
  return dtype >= 0 && dtype < kDataTypeCount ? dtypes_internal::kValueFields[dtype] : 0;
}

}  // namespace processor
