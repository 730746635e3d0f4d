"""The wire codec, through the real engine: every dtype round-trips through an identity model, in every
encoding the protobuf runtime can produce or accept (the fast paths for packed varints and string runs:
test_codec_fast_paths.py)."""
from __future__ import annotations

import struct

import numpy as np
import pytest

import processor
from codec_helpers import arrays_of_shape, assert_echoed, build_request
from processor import _core, predict_pb2, tensors
from wire_helpers import key, length_delimited, request_from_arrays, unpacked_array, varint


@pytest.fixture(scope="module")
def echo(echo_model):
    with processor.Processor({"savedmodel_dir": echo_model}) as p:
        yield p


@pytest.mark.parametrize("shape", [(4,), (2, 2), (1, 4, 1), (0,), (3, 0, 2), ()], ids=str)
def test_every_dtype_round_trips_packed(echo, shape):
    arrays = arrays_of_shape(shape)
    code, body = echo.process(build_request(arrays).SerializeToString())
    assert code == 200, body
    assert_echoed(arrays, body)


@pytest.mark.parametrize("shape", [(4,), (2, 3), ()], ids=str)
def test_every_dtype_round_trips_unpacked(echo, shape):
    arrays = arrays_of_shape(shape)
    request = build_request(arrays)
    unpacked = request_from_arrays((alias, unpacked_array(request.inputs[alias])) for alias in arrays)
    # the hand encoding must mean the same message to the reference runtime
    assert predict_pb2.PredictRequest.FromString(unpacked) == request
    code, body = echo.process(unpacked)
    assert code == 200, body
    assert_echoed(arrays, body)


def test_scalar_without_array_shape_is_a_scalar(echo):
    arrays = arrays_of_shape(())
    request = build_request(arrays)
    for array in request.inputs.values():
        array.ClearField("array_shape")
    code, body = echo.process(request.SerializeToString())
    assert code == 200, body
    assert_echoed(arrays, body)


def test_unknown_fields_are_skipped_everywhere(echo):
    arrays = arrays_of_shape((2,))
    request = build_request(arrays)
    unknown = key(15, 0) + varint(99) + length_delimited(16, b"future") + key(17, 5) + b"abcd" + key(18, 1) + b"12345678"
    arrays_bytes = [(alias, request.inputs[alias].SerializeToString() + unknown) for alias in arrays]
    data = unknown + request_from_arrays(arrays_bytes) + unknown
    code, body = echo.process(data)
    assert code == 200, body
    assert_echoed(arrays, body)


def array_fields(array: predict_pb2.ArrayProto) -> dict:
    """An ArrayProto's dtype, array_shape and values fields, each serialized alone (concatenated in any
    order they are the same message to protobuf), and its dims split over two array_shapes (which
    protobuf merges)."""
    shape = predict_pb2.ArrayProto(array_shape=array.array_shape) if array.HasField("array_shape") else None
    values = predict_pb2.ArrayProto()
    values.CopyFrom(array)
    values.ClearField("dtype")
    values.ClearField("array_shape")
    dims = list(array.array_shape.dim)
    split = b"".join(predict_pb2.ArrayProto(array_shape=predict_pb2.ArrayShape(dim=part)).SerializeToString()
                     for part in (dims[:1], dims[1:]))
    return {"dtype": predict_pb2.ArrayProto(dtype=array.dtype).SerializeToString(),
            "shape": shape.SerializeToString() if shape is not None else b"",
            "split shape": split if shape is not None else b"",
            "values": values.SerializeToString()}


def entry_value_first(name: str, array_bytes: bytes) -> bytes:
    return length_delimited(2, length_delimited(2, array_bytes) + length_delimited(1, name.encode()))


# Serializers write an entry as key, value and an ArrayProto as dtype, shape, values, which the parser
# reads by matching bytes; every other layout must mean the same to it as to protobuf.
LAYOUTS = {
    "as serializers write it": lambda f: f["dtype"] + f["shape"] + f["values"],
    "values, shape, dtype": lambda f: f["values"] + f["shape"] + f["dtype"],
    "shape, dtype, values": lambda f: f["shape"] + f["dtype"] + f["values"],
    "dtype twice, the last wins": lambda f: predict_pb2.ArrayProto(dtype=predict_pb2.DT_HALF).SerializeToString()
    + f["shape"] + f["values"] + f["dtype"],
    "unknown field first": lambda f: key(15, 0) + varint(3) + f["dtype"] + f["shape"] + f["values"],
    "unknown field inside the shape": lambda f: f["dtype"] + (
        length_delimited(2, key(9, 0) + varint(1) + f["shape"][2:]) if f["shape"] else b"") + f["values"],
    "dims split over two shapes": lambda f: f["dtype"] + f["split shape"] + f["values"],
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(3,), (2, 200), (130,), ()], ids=str)
def test_every_field_order_and_layout_means_what_protobuf_reads(echo, layout, shape):
    arrays = arrays_of_shape(shape)
    request = build_request(arrays)
    laid_out = [(alias, LAYOUTS[layout](array_fields(request.inputs[alias]))) for alias in arrays]
    for data in (request_from_arrays(laid_out),
                 b"".join(entry_value_first(alias, array_bytes) for alias, array_bytes in laid_out)):
        parsed = predict_pb2.PredictRequest.FromString(data)
        parsed.DiscardUnknownFields()
        assert parsed == request  # the reference runtime reads the same message
        code, body = echo.process(data)
        assert code == 200, body
        assert_echoed(arrays, body)


def test_repeated_map_key_last_wins_like_protobuf(echo):
    arrays = arrays_of_shape((2,))
    request = build_request(arrays)
    first = predict_pb2.ArrayProto(dtype=predict_pb2.DT_FLOAT, float_val=[9, 9, 9])
    first.array_shape.dim.append(3)
    pairs = [("float", first.SerializeToString())] + [(a, request.inputs[a].SerializeToString()) for a in arrays]
    data = request_from_arrays(pairs)
    assert predict_pb2.PredictRequest.FromString(data).inputs["float"] == request.inputs["float"]
    code, body = echo.process(data)
    assert code == 200, body
    assert_echoed(arrays, body)


def test_response_bytes_equal_the_reference_runtimes_deterministic_encoding(echo):
    arrays = arrays_of_shape((2, 3))
    code, body = echo.process(build_request(arrays).SerializeToString())
    assert code == 200
    assert predict_pb2.PredictResponse.FromString(body).SerializeToString(deterministic=True) == body


def test_negative_int32_travel_as_ten_byte_varints(echo):
    arrays = arrays_of_shape((4,))
    request = build_request(arrays)
    encoded = request.inputs["int32"].SerializeToString()
    assert varint(-1) in encoded and len(varint(-1)) == 10
    code, body = echo.process(request.SerializeToString())
    assert code == 200
    assert_echoed(arrays, body)



def test_large_tensor_round_trips(echo):
    arrays = arrays_of_shape((4,))
    arrays["float"] = np.arange(1_000_000, dtype=np.float32).reshape(1000, 1000)
    arrays["int64"] = np.arange(-500_000, 500_000, dtype=np.int64)
    code, body = echo.process(build_request(arrays).SerializeToString())
    assert code == 200
    assert_echoed(arrays, body)


def float_array_fragment(dims=(), values=()) -> bytes:
    """Part of an ArrayProto: dtype DT_FLOAT, an array_shape holding `dims`, packed `values`."""
    shape = length_delimited(2, b"".join(key(1, 0) + varint(d) for d in dims))
    return key(1, 0) + varint(predict_pb2.DT_FLOAT) + shape + length_delimited(3, struct.pack(f"<{len(values)}f", *values))


def test_repeated_message_fields_merge_like_protobuf(echo):
    """Two values in one map entry merge into one ArrayProto, and two array_shapes merge their dims, as
    the reference runtime reads them."""
    arrays = arrays_of_shape((2,))
    request = build_request(arrays)
    others = request_from_arrays((a, request.inputs[a].SerializeToString()) for a in arrays if a != "float")
    entry = (length_delimited(1, b"float") + length_delimited(2, float_array_fragment([1], [1.5]))
             + length_delimited(2, float_array_fragment([3], [2.5, 3.5])))
    data = others + length_delimited(2, entry)

    merged = predict_pb2.PredictRequest.FromString(data).inputs["float"]
    assert list(merged.array_shape.dim) == [1, 3] and list(merged.float_val) == [1.5, 2.5, 3.5]
    code, body = echo.process(data)
    assert code == 200, body
    arrays["float"] = np.array([[1.5, 2.5, 3.5]], dtype=np.float32)
    assert_echoed(arrays, body)


@pytest.mark.parametrize("shape", [(4,), (2, 3), (0,), ()], ids=str)
def test_predict_round_trips_every_dtype_through_numpy(echo, shape):
    arrays = arrays_of_shape(shape)
    outputs = echo.predict(arrays)
    assert sorted(outputs) == sorted(arrays)
    for alias, expected in arrays.items():
        got = outputs[alias]
        assert got.shape == expected.shape, alias
        if expected.dtype == object:
            assert got.dtype == object and got.tolist() == expected.tolist(), alias
        else:
            assert got.dtype == expected.dtype, alias
            np.testing.assert_array_equal(got, expected, err_msg=alias)


def test_predict_accepts_unicode_strings_and_lists(echo):
    arrays = arrays_of_shape((2,))
    arrays["string"] = np.array(["été", "b"])  # numpy unicode: sent as UTF-8 bytes
    arrays["int64"] = [5, -6]                  # plain lists take the signature's dtype
    outputs = echo.predict(arrays)
    assert outputs["string"].tolist() == ["été".encode(), b"b"]
    assert outputs["int64"].dtype == np.int64 and outputs["int64"].tolist() == [5, -6]


def test_strings_of_every_length_round_trip_byte_for_byte(echo):
    """Strings up to TString's inline capacity (22 bytes) are written into it directly, longer ones
    through TF_TString_Copy: every length on both sides of the boundary, with NUL and 0xFF bytes, and
    the last string ending the request buffer."""
    strings = [bytes((7 * n + j * 31) % 256 for j in range(n)) for n in range(41)] + [b"\0" * 22, b"\xff" * 23]
    arrays = arrays_of_shape((len(strings),))
    arrays["string"] = np.empty(len(strings), dtype=object)
    arrays["string"][:] = strings
    others = build_request({alias: array for alias, array in arrays.items() if alias != "string"})
    payload = others.SerializeToString() + build_request({"string": arrays["string"]}).SerializeToString()
    assert payload.endswith(strings[-1])  # concatenated messages merge: the string entry comes last
    code, body = echo.process(payload)
    assert code == 200, body
    assert_echoed(arrays, body)


def test_requests_of_one_shape_in_a_row_each_get_their_own_values(echo):
    """A thread's next request of the same shapes writes into its previous request's input tensors
    (strings too, unless one went to the heap): every request in a row must echo exactly its own values,
    whether the strings it overwrites were shorter, longer, on the heap or inline."""
    rounds = [
        [b"a", b"bb", b"ccc"],
        [b"x" * 22, b"", b"y" * 7],                   # overwrites with longer and shorter inline strings
        [b"long " * 10, b"z", b"q" * 23],            # strings on the heap: this tensor is not kept
        [b"k", b"l", b"m"],                          # fresh again
        [b"n" * 21, b"o" * 40, b"p"],                # writes a heap string into a kept tensor
        [b"r", b"s", b"t"],
    ]
    for number, strings in enumerate(rounds):
        arrays = arrays_of_shape((3,))
        for alias, array in arrays.items():  # numeric values change too, so a stale tensor would show
            if array.dtype != object:
                arrays[alias] = (array + number).astype(array.dtype) if array.dtype != bool else array ^ bool(number % 2)
        arrays["string"] = np.empty(3, dtype=object)
        arrays["string"][:] = strings
        code, body = echo.process(build_request(arrays).SerializeToString())
        assert code == 200, body
        assert_echoed(arrays, body)


def test_requests_whose_shapes_change_but_not_their_sizes_each_get_their_shape(echo):
    """A thread's kept input tensor is reused only for the same dtype and dims, which the binder
    records instead of asking TensorFlow: six elements as [2,3], [3,2], [6], [1,6] and [2,3] again
    must each come back in their own shape."""
    for number, shape in enumerate([(2, 3), (3, 2), (6,), (1, 6), (2, 3)]):
        arrays = arrays_of_shape(shape)
        arrays["float"] = (np.arange(6, dtype=np.float32) + number).reshape(shape)
        code, body = echo.process(build_request(arrays).SerializeToString())
        assert code == 200, body
        assert_echoed(arrays, body)


def test_the_dtype_table_is_one_across_languages():
    """cpp/common/dtypes.h is the data plane's one table of the dtypes the protocol carries; Python's
    (processor/tensors.py) and predict.proto's names must say the same."""
    from processor import predict_pb2
    table = _core.dtype_table()
    assert {number for number, *_ in table} == set(tensors._DTYPES)
    for number, name, field, kind, itemsize in table:
        assert predict_pb2.ArrayDataType.Name(number) == name
        numpy_type, python_field = tensors._DTYPES[number]
        assert python_field == field, name
        if numpy_type is object:
            assert kind == "O"
        else:
            assert (np.dtype(numpy_type).kind, np.dtype(numpy_type).itemsize) == (kind, itemsize), name
