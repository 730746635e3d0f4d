"""The codec's fast paths, through the real engine: packed varints counted and decoded in blocks, runs
of strings walked as two chains and staged, at every length, offset and boundary where a block or a
chain could go wrong; each compared with what the protobuf runtime encodes and reads."""
from __future__ import annotations

import numpy as np
import pytest

import processor
from codec_helpers import arrays_of_shape, assert_echoed, build_request
from processor import predict_pb2, tensors
from wire_helpers import key, length_delimited, request_from_arrays, varint


@pytest.fixture(scope="module")
def echo(echo_model):
    with processor.Processor({"savedmodel_dir": echo_model}) as p:
        yield p




@pytest.mark.parametrize("offset", range(16))
def test_packed_varints_of_every_length_round_trip_at_every_offset(echo, offset):
    """The decoder counts packed varints 64, then eight bytes at a time, and decodes them sixteen
    bytes at a time: a varint of each length (1 to 10 bytes) must count once wherever it falls in a
    block or a word."""
    arrays = arrays_of_shape((4,))
    lengths = [(1 << (7 * k)) - 1 for k in range(1, 10)] + [-1, 0, 2**63 - 1, -(2**63)]
    values = np.array([0] * offset + lengths + lengths[::-1] + [128] * offset, dtype=np.int64)
    arrays["int64"] = values
    code, body = echo.process(build_request(arrays).SerializeToString())
    assert code == 200, body
    assert_echoed(arrays, body)


def test_packed_varints_are_counted_and_checked_wherever_they_fall_in_a_64_byte_block(echo):
    """The counter reads a packed run 64 bytes at a time, then 8, then byte by byte, carrying a varint's
    length from one block to the next: a 10-byte varint (the longest there is) counts once, and an
    11-byte one is refused, inside a block, across a block's edge and in the tail."""
    others = build_request({alias: array for alias, array in arrays_of_shape((4,)).items() if alias != "int64"})
    for offset in range(150):
        for longest, accepted in ((b"\xff" * 9 + b"\x01", True), (b"\xff" * 10 + b"\x01", False)):
            ones_after = 160 - offset
            count = offset + 1 + ones_after
            body = (key(1, 0) + varint(predict_pb2.DT_INT64) + length_delimited(2, length_delimited(1, varint(count)))
                    + length_delimited(7, b"\x01" * offset + longest + b"\x01" * ones_after))
            code, response = echo.process(others.SerializeToString() + request_from_arrays([("int64", body)]))
            if accepted:
                assert code == 200, (offset, response)
                got = tensors.from_array_proto(predict_pb2.PredictResponse.FromString(response).outputs["int64"])
                assert got.tolist() == [1] * offset + [-1] + [1] * ones_after, offset
            else:
                assert (code, response) == (400, b"input 'int64': int64_val: a packed varint is longer than 10 bytes"), offset


def varint_stream(rng, blocks):
    """Values whose varints mix one-, two- and longer-byte encodings in runs: what the decoder's
    sixteen-byte fast paths (all one-byte, leading two-byte pairs, a leading 9- or 10-byte varint) see,
    entered and left everywhere."""
    buckets = [(0, 128), (128, 16384), (16384, 1 << 21), (1 << 40, 1 << 62), (-(1 << 62), 0)]
    values = []
    for _ in range(blocks):
        kind = rng.integers(0, 6)
        run = int(rng.integers(1, 40))
        if kind < 5:
            low, high = buckets[kind]
            values += rng.integers(low, high, size=run).tolist()
        else:  # two-byte values broken at a random place by one other length
            values += rng.integers(128, 16384, size=run).tolist()
            low, high = buckets[int(rng.choice([0, 2, 3, 4]))]
            values.insert(len(values) - int(rng.integers(0, run)), int(rng.integers(low, high)))
    return values


@pytest.mark.parametrize("seed", range(8))
def test_mixed_length_varint_runs_round_trip(echo, seed):
    """int64, int32, int16, uint8 and bool values decoded through the fast paths and the one-at-a-time
    loop alike, at every alignment of the runs."""
    rng = np.random.default_rng(seed)
    arrays = arrays_of_shape((4,))
    for offset in range(16):
        values = [1] * offset + varint_stream(rng, 12)
        arrays["int64"] = np.array(values, dtype=np.int64)
        arrays["int32"] = np.array([v % (1 << 31) if v >= 0 else -((-v) % (1 << 31)) for v in values], dtype=np.int32)
        arrays["int16"] = np.array([v % 32768 for v in values], dtype=np.int16)
        arrays["uint8"] = np.array([v % 256 for v in values], dtype=np.uint8)
        arrays["bool"] = np.array([v % 3 == 0 for v in values], dtype=np.bool_)
        code, body = echo.process(build_request(arrays).SerializeToString())
        assert code == 200, body
        assert_echoed(arrays, body)


@pytest.mark.parametrize("length", range(1, 11))
def test_a_varint_of_every_length_round_trips_at_every_distance_from_the_end(echo, length):
    """9- and 10-byte varints are decoded from one 8-byte load where a sixteen-byte block starts with
    one, byte by byte nearer the end of the packed run: each length, followed by 0 to 16 more values."""
    value = -1 if length == 10 else (1 << (7 * length)) - 1  # all bits set: every group must land
    arrays = arrays_of_shape((4,))
    for after in range(17):
        values = [300] * 3 + [value, (1 << (7 * length - 1)) if length < 10 else -(2**63)] + [5] * after
        arrays["int64"] = np.array(values, dtype=np.int64)
        code, body = echo.process(build_request(arrays).SerializeToString())
        assert code == 200, body
        assert_echoed(arrays, body)


def test_an_out_of_range_narrow_int_is_found_inside_a_fast_path_block(echo):
    """A two-byte value too large for int8 in the middle of a block of two-byte values is still caught."""
    arrays = arrays_of_shape((4,))
    request = build_request(arrays)
    values = [100] * 7 + [300] + [100] * 16  # int8 range ends at 127: 300 is out of it
    array = predict_pb2.ArrayProto(dtype=predict_pb2.DT_INT8, int_val=values)
    array.array_shape.dim.append(len(values))
    request.inputs["int8"].CopyFrom(array)
    code, body = echo.process(request.SerializeToString())
    assert code == 400
    assert body.decode() == "input 'int8': DT_INT8: value 300 is out of range"


@pytest.mark.parametrize("last", [1, 60, 127, 128, 300])
@pytest.mark.parametrize("before", [0, 5, 200])
def test_a_string_running_past_its_array_is_refused(echo, before, last):
    """The parser skips most of a run of short strings without bounds checks (more than 128 bytes from
    the end, a one-byte length cannot overrun): a string whose length runs one byte past the array
    must still be refused, after short and long runs, with a one- or two-byte length."""
    body = (key(1, 0) + varint(predict_pb2.DT_STRING) + length_delimited(2, key(1, 0) + varint(before + 1))
            + b"".join(length_delimited(6, b"abcde") for _ in range(before))
            + key(6, 2) + varint(last) + b"x" * (last - 1))
    arrays = arrays_of_shape((4,))
    request = build_request({alias: array for alias, array in arrays.items() if alias != "string"})
    code, response = echo.process(request.SerializeToString() + request_from_arrays([("string", body)]))
    assert code == 400
    assert response.decode() == "input 'string': malformed ArrayProto"


def test_a_shape_of_many_one_byte_dims_round_trips(echo):
    """Dims are packed varints too, read by a loop of their own: twenty one-byte dims, more than the
    sixteen that the values' fast path takes at once."""
    arrays = arrays_of_shape((1,) * 18 + (2, 2))
    code, body = echo.process(build_request(arrays).SerializeToString())
    assert code == 200, body
    assert_echoed(arrays, body)


@pytest.mark.parametrize("seed", range(4))
def test_string_runs_of_mixed_lengths_round_trip(echo, seed):
    """Runs of string_val with short strings (copied sixteen bytes at a time), strings up to the inline
    capacity and beyond, two-byte lengths (128 bytes and more), empty strings, a run cut in two by an
    unknown field, and fields after the run, so that every way out of the run's fast loop is taken."""
    rng = np.random.default_rng(seed)
    lengths = [int(n) for n in rng.choice([0, 1, 3, 7, 12, 15, 16, 17, 22, 23, 40, 127, 128, 300], size=150)]
    strings = [bytes(rng.integers(0, 256, size=n, dtype=np.uint8)) for n in lengths]
    cut = int(rng.integers(1, len(strings)))
    body = (key(1, 0) + varint(predict_pb2.DT_STRING)
            + b"".join(length_delimited(6, s) for s in strings[:cut])
            + key(15, 0) + varint(7)  # an unknown field between two runs of the same repeated field
            + b"".join(length_delimited(6, s) for s in strings[cut:])
            + length_delimited(2, key(1, 0) + varint(len(strings)))  # the shape after the values
            + length_delimited(16, b"tail"))
    arrays = arrays_of_shape((4,))
    request = build_request({alias: array for alias, array in arrays.items() if alias != "string"})
    data = request.SerializeToString() + request_from_arrays([("string", body)])
    arrays["string"] = np.empty(len(strings), dtype=object)
    arrays["string"][:] = strings
    code, response = echo.process(data)
    assert code == 200, response
    assert_echoed(arrays, response)


def string_array(strings, shape=None) -> bytes:
    """An ArrayProto of DT_STRING holding `strings` (one string_val field each), shape [len] by default."""
    dims = shape if shape is not None else [len(strings)]
    return (key(1, 0) + varint(predict_pb2.DT_STRING) + length_delimited(2, b"".join(key(1, 0) + varint(d) for d in dims))
            + b"".join(length_delimited(6, s) for s in strings))


def echo_strings(echo, entries, expected):
    """Sends the echo model its other inputs and `entries` (name, ArrayProto bytes) for 'string', and
    checks that `expected` comes back."""
    arrays = arrays_of_shape((4,))
    request = build_request({alias: array for alias, array in arrays.items() if alias != "string"})
    code, response = echo.process(request.SerializeToString() + request_from_arrays(entries))
    assert code == 200, response
    arrays["string"] = np.empty(len(expected), dtype=object)
    arrays["string"][:] = expected
    assert_echoed(arrays, response)


@pytest.mark.parametrize("seed", range(3))
def test_long_runs_of_strings_up_to_the_inline_capacity_round_trip(echo, seed):
    """The parse writes strings of up to 22 bytes (TString's inline capacity) into its staging as it
    walks them, 23 bytes copied per string with no branch on the length: every length from 0 to 22 in
    a run long enough for the unchecked loop, with bytes that look like tags and lengths, and the
    string ending the request."""
    rng = np.random.default_rng(seed)
    strings = [bytes(rng.choice([0x32, 0x00, 0x80, 0xFF, 0x16], size=int(n)).astype(np.uint8))
               for n in rng.integers(0, 23, size=400)]
    echo_strings(echo, [("string", string_array(strings))], strings)


# A long run of short strings is walked as two chains, the second from a point past the middle that
# looks like a string's start (a tag before it, four short strings after); it counts only if the
# first chain lands on it. These runs make the second chain start where it must be dropped, or stop
# early, or make the first chain end before the middle.
FAKE_STARTS = (b"\x32\x00" * 11)[:22]  # inside a string: a tag, then empty strings each under a tag


@pytest.mark.parametrize("case", ["every string looks like strings", "half do", "one does, past the middle",
                                  "a long string in the second half", "a long string right after the middle",
                                  "the run ends before the middle", "strings of 0 and 1 byte, packed tightest"])
def test_runs_walked_as_two_chains_round_trip_whatever_their_middle_looks_like(echo, case):
    rng = np.random.default_rng(len(case))
    short = [bytes(rng.integers(0, 256, size=int(n), dtype=np.uint8)) for n in rng.integers(0, 12, size=300)]
    tail = b""
    if case == "every string looks like strings":
        strings = [FAKE_STARTS[:int(n)] for n in rng.integers(8, 23, size=300)]
    elif case == "half do":
        strings = [FAKE_STARTS if i % 2 else s for i, s in enumerate(short)]
    elif case == "one does, past the middle":
        strings = short[:160] + [FAKE_STARTS] + short[160:]
    elif case == "a long string in the second half":
        strings = short[:220] + [b"x" * 40] + short[220:]
    elif case == "a long string right after the middle":
        strings = short[:150] + [b"y" * 23] + short[150:]
    elif case == "the run ends before the middle":  # other fields after it, with bytes that look like strings
        strings = short[:20]
        tail = length_delimited(15, FAKE_STARTS * 60)
    else:  # as many strings as the first half can hold: the second chain's room must start past them
        strings = [bytes([i % 256])[:i % 3] for i in range(600)]
    echo_strings(echo, [("string", string_array(strings) + tail)], strings)


def test_arrays_walked_as_two_chains_one_after_another_round_trip(echo):
    """A run split in two, and two arrays in one request (the key given twice: the last counts), each
    long enough to be split: each array's staging starts where the one before ended (a second chain's
    strings are moved down to follow the first chain's)."""
    first = [b"first %d" % i for i in range(200)]
    second = [b"second %d" % i for i in range(300)]
    echo_strings(echo, [("string", string_array(first + second))], first + second)
    echo_strings(echo, [("string", string_array(second)), ("string", string_array(first))], first)


def test_strings_beyond_the_staging_room_are_read_from_the_request(echo):
    """A thread stages at most 16,384 strings per request: 20,000 one-byte strings fill the room, and
    the array is read from the request instead; a request after it is staged again."""
    many = [bytes([i % 251]) for i in range(20_000)]
    echo_strings(echo, [("string", string_array(many))], many)
    few = [b"after", b"", b"the", b"big one"]
    echo_strings(echo, [("string", string_array(few))], few)


def test_a_string_too_long_to_stage_reads_the_whole_array_from_the_request(echo):
    """Strings staged before a 23-byte one (the first that cannot be inline) are not used: the tensor
    is built from the request, in order, whether the long string comes early, late or last."""
    short = [b"s%03d" % i for i in range(60)]
    for position in (0, 30, 60):
        strings = short[:position] + [b"L" * 23] + short[position:]
        echo_strings(echo, [("string", string_array(strings))], strings)


def test_staged_strings_of_merged_and_repeated_arrays_round_trip(echo):
    """Strings staged for one array are contiguous across the pieces that merge into it (two values in
    one map entry) and across runs; a key given twice uses the last array's own staged strings."""
    first = [b"a%d" % i for i in range(70)]
    second = [b"b%d" % i for i in range(50)]
    merged = (length_delimited(1, b"string") + length_delimited(2, string_array(first, shape=[]))
              + length_delimited(2, string_array(second, shape=[len(first) + len(second)])))
    arrays = arrays_of_shape((4,))
    request = build_request({alias: array for alias, array in arrays.items() if alias != "string"})
    data = request.SerializeToString() + length_delimited(2, merged)
    assert list(predict_pb2.PredictRequest.FromString(data).inputs["string"].string_val) == first + second
    code, response = echo.process(data)
    assert code == 200, response
    arrays["string"] = np.empty(len(first) + len(second), dtype=object)
    arrays["string"][:] = first + second
    assert_echoed(arrays, response)

    echo_strings(echo, [("string", string_array(first)), ("string", string_array(second))], second)
