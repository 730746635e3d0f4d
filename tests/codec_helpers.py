"""What the codec tests share: the echo model's arrays of every dtype, requests built from them, and
the check that a response echoes them exactly."""
from __future__ import annotations

import numpy as np

from model_builders import ECHO_DTYPES
from processor import predict_pb2, tensors


def arrays_of_shape(shape):
    """One array per dtype, of `shape`, filled by cycling the sample values."""
    count = int(np.prod(shape)) if shape else 1
    out = {}
    for alias, (_, np_type, samples) in ECHO_DTYPES.items():
        values = [samples[i % len(samples)] for i in range(count)]
        array = np.empty(count, dtype=object) if np_type is object else np.array(values, dtype=np_type)
        if np_type is object:
            array[:] = values
        out[alias] = array.reshape(shape)
    return out


def build_request(arrays) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    for alias, array in arrays.items():
        tensors.to_array_proto(array, request.inputs[alias])
    return request


def assert_echoed(arrays, response_bytes):
    response = predict_pb2.PredictResponse.FromString(response_bytes)
    assert sorted(response.outputs) == sorted(arrays)
    for alias, expected in arrays.items():
        got = tensors.from_array_proto(response.outputs[alias])
        assert got.shape == expected.shape, alias
        assert response.outputs[alias].dtype == tensors.dtype_of(expected), alias
        if expected.dtype == object:
            assert got.tolist() == expected.tolist(), alias
        else:
            assert got.dtype == expected.dtype, alias
            np.testing.assert_array_equal(got, expected, err_msg=alias)
