"""Request limits: max_request_bytes and max_tensor_elements bound what one request can make the process
allocate, and are checked before anything is allocated for the request."""
from __future__ import annotations

import numpy as np
import pytest

import processor
from processor.config import parse_config
from abi import CAbi
from processor import predict_pb2
from test_codec import arrays_of_shape, assert_echoed, build_request
from wire_helpers import key, length_delimited, request_from_arrays, varint


def echo_request(**arrays) -> bytes:
    request = build_request(arrays_of_shape((2,)))
    for alias, array in arrays.items():
        processor.tensors.to_array_proto(array, request.inputs[alias])
    return request.SerializeToString()


def test_defaults_are_documented_values():
    config = parse_config({"savedmodel_dir": "/m"})
    assert config.max_request_bytes == 64 << 20
    assert config.max_tensor_elements == 1 << 24


def test_request_size_limit_is_exact(echo_model):
    request = echo_request()
    with processor.Processor({"savedmodel_dir": echo_model, "max_request_bytes": len(request)}) as p:
        code, body = p.process(request)
        assert code == 200, body
        code, body = p.process(request + key(9, 0) + varint(1))  # one unknown field more
        assert code == 400
        assert body.decode() == (f"the request is {len(request) + 2} bytes, more than max_request_bytes "
                                 f"({len(request)})")
        assert p.process(request)[0] == 200  # still serving


def test_default_request_size_limit_rejects_before_parsing(echo_model):
    with processor.Processor({"savedmodel_dir": echo_model}) as p:
        code, body = p.process(b"\x00" * ((64 << 20) + 1))  # not even a valid request: size comes first
        assert code == 400
        assert body.decode() == "the request is 67108865 bytes, more than max_request_bytes (67108864)"


def test_tensor_element_limit_is_per_tensor_and_exact(echo_model):
    with processor.Processor({"savedmodel_dir": echo_model, "max_tensor_elements": 10}) as p:
        arrays = arrays_of_shape((10,))
        code, body = p.process(build_request(arrays).SerializeToString())
        assert code == 200, body
        assert_echoed(arrays, body)
        arrays["float"] = np.zeros((11,), np.float32)
        code, body = p.process(build_request(arrays).SerializeToString())
        assert code == 400
        assert body.decode() == "input 'float': shape [11] has 11 elements, more than max_tensor_elements (10)"


def test_string_amplification_is_bounded(echo_model):
    """An empty string is 2 bytes on the wire and a 24-byte TF_TString in memory: a 20 MB request of
    empty strings would ask for 240 MB. The element limit stops it before any allocation."""
    count = 10_000_001
    strings = length_delimited(6, b"") * count
    array = key(1, 0) + varint(predict_pb2.DT_STRING) + length_delimited(2, key(1, 0) + varint(count)) + strings
    with processor.Processor({"savedmodel_dir": echo_model, "max_tensor_elements": 10_000_000}) as p:
        code, body = p.process(request_from_arrays([("string", array)]))
        assert code == 400
        assert body.decode() == ("input 'string': shape [10000001] has 10000001 elements, more than "
                                 "max_tensor_elements (10000000)")


@pytest.mark.parametrize("rank, code", [(254, 200), (255, 400)])
def test_rank_beyond_tensorflows_maximum_is_rejected_not_aborted(echo_model, rank, code):
    """TensorShape aborts the process beyond 254 dims; the echo model accepts any rank (numpy cannot
    hold more than 64 dims, so the request is built as a proto)."""
    request = build_request(arrays_of_shape((2,)))
    request.inputs["float"].CopyFrom(predict_pb2.ArrayProto(dtype=predict_pb2.DT_FLOAT, array_shape={"dim": [1] * rank},
                                                            float_val=[2.5]))
    with processor.Processor({"savedmodel_dir": echo_model}) as p:
        got, body = p.process(request.SerializeToString())
        assert got == code, body[:200]
        if code == 400:
            assert body.decode() == "input 'float': rank 255 is more than TensorFlow's maximum of 254"
        else:
            echoed = predict_pb2.PredictResponse.FromString(body).outputs["float"]
            assert list(echoed.array_shape.dim) == [1] * rank and list(echoed.float_val) == [2.5]


@pytest.mark.parametrize("field, value, message", [
    ("max_request_bytes", 0, "must be >= 1, got 0"),
    ("max_request_bytes", "64MB", 'must be an integer, got str "64MB"'),
    ("max_tensor_elements", -1, "must be >= 1, got -1"),
    ("max_tensor_elements", 2**40, "must be < 2^31"),
])
def test_bad_limits_are_config_errors(field, value, message):
    with pytest.raises(processor.ConfigError) as error:
        parse_config({"savedmodel_dir": "/m", field: value})
    assert error.value.field == field and message in str(error.value)


def test_limits_apply_to_c_hosts(echo_model):
    abi = CAbi()
    handle, state = abi.initialize({"savedmodel_dir": echo_model, "max_tensor_elements": 3})
    assert state == 0
    try:
        arrays = arrays_of_shape((4,))
        code, body = abi.process(handle, build_request(arrays).SerializeToString())
        assert code == 400
        assert b"more than max_tensor_elements (3)" in body
    finally:
        abi.finalize(handle)
