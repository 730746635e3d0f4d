"""Property tests: any mutation of a valid request is answered with 200 or 400 and a message, never a
crash, and the model keeps serving."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import processor
from processor import predict_pb2
from test_codec import arrays_of_shape, assert_echoed, build_request


@pytest.fixture(scope="module")
def echo(echo_model):
    with processor.Processor({"savedmodel_dir": echo_model}) as p:
        yield p


VALID = build_request(arrays_of_shape((2, 3))).SerializeToString()

mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(VALID) - 1), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, len(VALID) - 1), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, len(VALID)), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, len(VALID) - 1), st.just(0)),
)


def mutate(data: bytes, steps) -> bytes:
    out = bytearray(data)
    for kind, position, value in steps:
        position = min(position, max(len(out) - 1, 0))
        if kind == "flip" and out:
            out[position] ^= value
        elif kind == "truncate":
            del out[position:]
        elif kind == "insert":
            out.insert(position, value)
        elif kind == "delete" and out:
            del out[position]
    return bytes(out)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(mutations, min_size=1, max_size=4))
def test_mutated_requests_get_200_or_400_with_a_message(echo, steps):
    request = mutate(VALID, steps)
    code, body = echo.process(request)
    assert code in (200, 400), (code, body)
    if code == 400:
        assert body and body.decode("utf-8")
    elif request:
        predict_pb2.PredictResponse.FromString(body)  # a 200 is always a valid response
    else:
        assert json.loads(body)["signature_name"] == "serving_default"  # empty request: the signature


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 4), min_size=0, max_size=3))
def test_random_valid_shapes_round_trip(echo, shape):
    arrays = arrays_of_shape(tuple(shape))
    code, body = echo.process(build_request(arrays).SerializeToString())
    assert code == 200, body
    assert_echoed(arrays, body)


def test_model_still_serves_after_the_fuzzing(echo):
    arrays = arrays_of_shape((3,))
    code, body = echo.process(build_request(arrays).SerializeToString())
    assert code == 200
    assert_echoed(arrays, body)
