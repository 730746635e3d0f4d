"""Every class of bad request gets its code and a message naming what is wrong, and the model keeps
serving correct answers afterwards."""
from __future__ import annotations

import struct

import numpy as np
import pytest

import processor
from processor import predict_pb2, tensors
from lifecycle_helpers import serialize
from wire_helpers import key, length_delimited, request_from_arrays, varint


@pytest.fixture(scope="module")
def served(rec_model):
    with processor.Processor(rec_model.config()) as p:
        yield p


def good_request(batch) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    for name, value in batch.items():
        tensors.to_array_proto(np.asarray(value), request.inputs[name])
    return request


def mutate(batch, fn) -> bytes:
    request = good_request(batch)
    fn(request)
    return request.SerializeToString()


def set_user_ids(request, shape, values):
    array = request.inputs["user_id"]
    array.Clear()
    array.dtype = predict_pb2.DT_INT64
    array.array_shape.dim.extend(shape)
    array.int64_val.extend(values)


BAD_REQUESTS = {
    "undecodable bytes": (lambda b: b"\xff\xff\xff\xff", 400, "not a valid PredictRequest"),
    "truncated message": (lambda b: good_request(b).SerializeToString()[:-3], 400, "malformed"),
    "unknown input": (lambda b: mutate(b, lambda r: r.inputs["nope"].CopyFrom(r.inputs["user_id"])), 400,
                      "unknown input 'nope'"),
    "missing input": (lambda b: mutate(b, lambda r: r.inputs.pop("dense")), 400, "missing input 'dense'"),
    "dtype mismatch": (lambda b: mutate(b, lambda r: r.inputs["dense"].CopyFrom(
        predict_pb2.ArrayProto(dtype=predict_pb2.DT_DOUBLE, array_shape={"dim": [6, 4]}, double_val=[0.0] * 24))),
        400, "input 'dense': dtype DT_DOUBLE does not match the signature's DT_FLOAT"),
    "dtype not set": (lambda b: mutate(b, lambda r: r.inputs["user_id"].ClearField("dtype")), 400, "dtype"),
    "values in the wrong field": (lambda b: mutate(b, lambda r: r.inputs["user_id"].float_val.append(1.0)), 400,
                                  "DT_INT64 values belong in int64_val, but float_val is set"),
    "value count not matching shape": (lambda b: mutate(b, lambda r: set_user_ids(r, [6], [1, 2, 3])), 400,
                                       "shape [6] needs 6 values but 3 were sent"),
    "negative dim": (lambda b: mutate(b, lambda r: set_user_ids(r, [-6], [1] * 6)), 400, "negative dimension -6"),
    "shape overflow": (lambda b: mutate(b, lambda r: set_user_ids(r, [2**32, 2**32, 2**32], [])), 400,
                       "overflows"),
    "huge shape without values": (lambda b: mutate(b, lambda r: set_user_ids(r, [2**40], [])), 400,
                                  "shape [1099511627776] has 1099511627776 elements, more than max_tensor_elements"),
    "shape without enough values": (lambda b: mutate(b, lambda r: set_user_ids(r, [9], [1] * 6)), 400,
                                    "needs 9 values but 6 were sent"),
    "shape not matching the signature": (lambda b: mutate(b, lambda r: r.inputs["dense"].CopyFrom(
        predict_pb2.ArrayProto(dtype=predict_pb2.DT_FLOAT, array_shape={"dim": [6, 3]}, float_val=[0.0] * 18))),
        400, "input 'dense': shape [6,3] does not match the signature's shape [-1,4]"),
    "batch sizes disagree": (lambda b: mutate(b, lambda r: set_user_ids(r, [2], [1, 2])), 400, ""),
    "unknown output_filter": (lambda b: mutate(b, lambda r: r.output_filter.append("nope")), 400,
                              "unknown output 'nope' in output_filter"),
    "input given twice": (lambda b: mutate(b, lambda r: r.inputs["user_id:0"].CopyFrom(r.inputs["user_id"])), 400,
                          "given twice"),
    "packed length not a multiple of 4": (lambda b: request_from_arrays(
        [("dense", key(1, 0) + varint(1) + length_delimited(3, b"\x00" * 5))]), 400, "float_val"),
    "truncated packed varints": (lambda b: request_from_arrays(
        [("user_id", key(1, 0) + varint(9) + length_delimited(7, b"\x80"))]), 400, "truncated"),
    "packed varint of 11 bytes": (lambda b: request_from_arrays(
        [("user_id", key(1, 0) + varint(9) + length_delimited(7, b"\x80" * 10 + b"\x01"))]), 400,
        "input 'user_id': int64_val: a packed varint is longer than 10 bytes"),
    "packed varint of 11 bytes across words": (lambda b: request_from_arrays(
        [("user_id", key(1, 0) + varint(9) + length_delimited(7, b"\x01" * 5 + b"\xff" * 10 + b"\x01"))]), 400,
        "a packed varint is longer than 10 bytes"),
    # A run shorter than the counter's 64-byte blocks is read 8 bytes at a time: over-long varints
    # starting at several places in a word.
    "packed varint of 11 bytes after 12 bytes": (lambda b: request_from_arrays(
        [("user_id", key(1, 0) + varint(9) + length_delimited(7, b"\x01" * 12 + b"\xff" * 10 + b"\x01" * 10))]), 400,
        "a packed varint is longer than 10 bytes"),
    "packed varint of 11 bytes after 18 bytes": (lambda b: request_from_arrays(
        [("user_id", key(1, 0) + varint(9) + length_delimited(7, b"\x01" * 18 + b"\xff" * 10 + b"\x01" * 5))]),
        400, "a packed varint is longer than 10 bytes"),
    "truncated packed dims": (lambda b: request_from_arrays(
        [("user_id", key(1, 0) + varint(9) + length_delimited(2, length_delimited(1, b"\x02\x80")))]), 400,
        "input 'user_id': array_shape: packed varints are truncated"),
    "packed dim of 11 bytes": (lambda b: request_from_arrays(
        [("user_id", key(1, 0) + varint(9) + length_delimited(2, length_delimited(1, b"\x80" * 10 + b"\x01")))]), 400,
        "input 'user_id': array_shape: a packed varint is longer than 10 bytes"),
    "group holding field 0": (lambda b: key(2, 3) + b"\x00", 400,
                              "the request is not a valid PredictRequest (malformed protocol buffer)"),
    "group in an unknown field, never ended": (lambda b: serialize(b) + key(9, 3) + key(1, 0) + varint(1), 400,
                                               "not a valid PredictRequest"),
    "end of a group never started": (lambda b: serialize(b) + key(9, 4), 400, "not a valid PredictRequest"),
    "group ended by another field's end": (lambda b: serialize(b) + key(9, 3) + key(8, 4), 400,
                                           "not a valid PredictRequest"),
    "input name that is not UTF-8": (lambda b: mutate(b, lambda r: r.inputs.pop("dense")) + request_from_arrays(
        [(b"de\xffnse\n", b"")]), 400, "unknown input 'de\\xffnse\\x0a'"),
    "output name in another script": (lambda b: mutate(b, lambda r: r.output_filter.append("概率")), 400,
                                      "unknown output '概率' in output_filter"),
    "dtype the protocol cannot carry": (lambda b: mutate(b, lambda r: r.inputs["user_id"].CopyFrom(
        predict_pb2.ArrayProto(dtype=predict_pb2.DT_HALF))), 400, "DT_HALF"),
}


def group(field: int, payload: bytes = b"") -> bytes:
    return key(field, 3) + payload + key(field, 4)


def with_array_bytes(batch, name: str, extra: bytes) -> bytes:
    """The batch's request with `extra` appended to input `name`'s ArrayProto."""
    request = good_request(batch)
    array = request.inputs.pop(name).SerializeToString()
    return request.SerializeToString() + request_from_arrays([(name, array + extra)])


# Requests protobuf parses: unknown groups (empty, nested, deep) and known fields with another wire type,
# which protobuf keeps aside as unknown fields (google/protobuf/wire_format_lite.cc, SkipField).
PROTOBUF_VALID = {
    "empty group in the request": lambda b: serialize(b) + group(9),
    "nested groups in the request": lambda b: serialize(b) + group(9, group(10, key(1, 0) + varint(7)) + group(11)),
    "groups 99 deep": lambda b: serialize(b) + (b"".join(key(12, 3) for _ in range(99)) +
                                                b"".join(key(12, 4) for _ in range(99))),
    "group inside an ArrayProto": lambda b: with_array_bytes(b, "user_id", group(15, key(3, 5) + b"\0\0\0\0")),
    "group inside array_shape": lambda b: with_array_bytes(b, "dense", length_delimited(2, group(4))),
    "signature_name as a varint": lambda b: serialize(b) + key(1, 0) + varint(5),
    "inputs as a varint": lambda b: serialize(b) + key(2, 0) + varint(5),
    "output_filter as fixed32": lambda b: serialize(b) + key(3, 5) + b"abcd",
    "dtype as fixed64": lambda b: with_array_bytes(b, "user_id", key(1, 1) + b"\1" * 8),
    "array_shape as a varint": lambda b: with_array_bytes(b, "dense", key(2, 0) + varint(3)),
    "float_val as a varint": lambda b: with_array_bytes(b, "dense", key(3, 0) + varint(1)),
    "int64_val as fixed32": lambda b: with_array_bytes(b, "user_id", key(7, 5) + b"\1\2\3\4"),
    "string_val as a varint": lambda b: with_array_bytes(b, "category", key(6, 0) + varint(1)),
    "dim as fixed64": lambda b: with_array_bytes(b, "dense", length_delimited(2, key(1, 1) + b"\0" * 8)),
}


@pytest.mark.parametrize("name", list(PROTOBUF_VALID))
def test_what_protobuf_parses_is_served_as_protobuf_reads_it(served, batch, name):
    """The oracle is protobuf itself: the bytes parse, and the answer equals the answer to what protobuf
    read from them, re-serialized (unknown fields and all)."""
    sent = PROTOBUF_VALID[name](batch)
    read = predict_pb2.PredictRequest.FromString(sent)
    read.DiscardUnknownFields()
    assert served.process(sent) == served.process(read.SerializeToString()) == served.process(serialize(batch))


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_request_is_rejected_and_the_model_keeps_serving(served, batch, name):
    make, code, message = BAD_REQUESTS[name]
    expected = served.predict(batch)
    got_code, body = served.process(make(batch))
    assert got_code == code, body
    assert message in body.decode("utf-8")
    assert body  # never an empty error
    after = served.predict(batch)
    for output, value in expected.items():
        np.testing.assert_array_equal(after[output], value)


def test_int_val_out_of_range_for_narrow_types(echo_model):
    with processor.Processor({"savedmodel_dir": echo_model}) as p:
        request = predict_pb2.PredictRequest()
        from test_codec import arrays_of_shape
        for alias, array in arrays_of_shape((2,)).items():
            tensors.to_array_proto(array, request.inputs[alias])
        request.inputs["int8"].int_val[0] = 300
        code, body = p.process(request.SerializeToString())
    assert code == 400
    assert body.decode() == "input 'int8': DT_INT8: value 300 is out of range"


def test_predict_raises_request_error_with_code_and_message(served, batch):
    with pytest.raises(processor.RequestError) as error:
        served.predict({**batch, "user_id": np.array([1.5] * 6)})
    assert error.value.code == 400 and "user_id" in error.value.message
    with pytest.raises(processor.RequestError) as error:
        served.predict(batch, output_filter=["nope"])
    assert error.value.code == 400 and "unknown output 'nope'" in error.value.message


def test_float_packed_values_are_copied_exactly(served, batch):
    # Sanity for the bad-request table: a request assembled by hand is served like the runtime's.
    request = good_request(batch)
    dense = request.inputs["dense"]
    raw = length_delimited(3, struct.pack(f"<{len(dense.float_val)}f", *dense.float_val))
    assert raw in request.SerializeToString()
