"""numpy arrays <-> ArrayProto, for Processor.predict()."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import predict_pb2

# ArrayDataType -> (numpy dtype, ArrayProto field)
_DTYPES = {
    predict_pb2.DT_FLOAT: (np.float32, "float_val"),
    predict_pb2.DT_DOUBLE: (np.float64, "double_val"),
    predict_pb2.DT_INT32: (np.int32, "int_val"),
    predict_pb2.DT_UINT8: (np.uint8, "int_val"),
    predict_pb2.DT_INT16: (np.int16, "int_val"),
    predict_pb2.DT_INT8: (np.int8, "int_val"),
    predict_pb2.DT_INT64: (np.int64, "int64_val"),
    predict_pb2.DT_BOOL: (np.bool_, "bool_val"),
    predict_pb2.DT_STRING: (object, "string_val"),
}
_FROM_NUMPY = {np.dtype(np_type): dtype for dtype, (np_type, _) in _DTYPES.items() if np_type is not object}


def numpy_dtype(dtype: int):
    """The numpy dtype of an ArrayDataType (object for strings); TypeError if the protocol lacks it."""
    try:
        return _DTYPES[dtype][0]
    except KeyError:
        raise TypeError(f"dtype {dtype} cannot travel in an ArrayProto") from None


def dtype_of(array: np.ndarray) -> int:
    if array.dtype.kind in "OSU":
        return predict_pb2.DT_STRING
    try:
        return _FROM_NUMPY[array.dtype]
    except KeyError:
        raise TypeError(f"numpy dtype {array.dtype} has no ArrayDataType") from None


def to_numpy_input(name: str, value: Any, dtype: Optional[int]) -> np.ndarray:
    """Converts a value to the array a signature input of `dtype` takes (None: keep the value's type).
    Refuses lossy conversions (floats to ints, numbers to strings) rather than guessing."""
    array = np.asarray(value)
    if dtype is None:
        return array
    np_type, _ = _DTYPES.get(dtype, (None, None))
    if np_type is None:
        return array
    if np_type is object:
        if array.dtype.kind not in "OSU":
            raise TypeError(f"input '{name}': expects strings, got {array.dtype}")
        return array
    if array.dtype.kind in "OSU" or not np.can_cast(array.dtype, np_type, casting="same_kind"):
        raise TypeError(f"input '{name}': expects {np.dtype(np_type)}, got {array.dtype}")
    return array.astype(np_type, copy=False)


def to_array_proto(array: np.ndarray, proto: predict_pb2.ArrayProto) -> None:
    dtype = dtype_of(array)
    proto.dtype = dtype
    proto.array_shape.dim.extend(array.shape)
    proto.array_shape.SetInParent()  # present even for scalars
    flat = array.reshape(-1)
    if dtype == predict_pb2.DT_STRING:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat.tolist())
    else:
        getattr(proto, _DTYPES[dtype][1]).extend(flat.tolist())


def from_array_proto(proto: predict_pb2.ArrayProto) -> np.ndarray:
    if proto.dtype not in _DTYPES:
        raise TypeError(f"ArrayProto dtype {predict_pb2.ArrayDataType.Name(proto.dtype)} is not supported")
    np_type, field_name = _DTYPES[proto.dtype]
    values = list(getattr(proto, field_name))
    shape = tuple(proto.array_shape.dim)
    if np_type is object:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    return np.array(values, dtype=np_type).reshape(shape)
