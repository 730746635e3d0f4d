"""Hand-written protobuf encodings the Python runtime never produces (unpacked scalars, unknown fields)."""
from __future__ import annotations

import struct
from typing import Iterable

from processor import predict_pb2


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def key(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def length_delimited(field: int, payload: bytes) -> bytes:
    return key(field, 2) + varint(len(payload)) + payload


def unpacked_array(array: predict_pb2.ArrayProto) -> bytes:
    """An ArrayProto with every repeated scalar written one element per field (legal, never emitted by
    proto3 serializers)."""
    out = key(1, 0) + varint(array.dtype)
    if array.HasField("array_shape"):
        out += length_delimited(2, b"".join(key(1, 0) + varint(d) for d in array.array_shape.dim))
    out += b"".join(key(3, 5) + struct.pack("<f", v) for v in array.float_val)
    out += b"".join(key(4, 1) + struct.pack("<d", v) for v in array.double_val)
    out += b"".join(key(5, 0) + varint(v) for v in array.int_val)
    out += b"".join(length_delimited(6, v) for v in array.string_val)
    out += b"".join(key(7, 0) + varint(v) for v in array.int64_val)
    out += b"".join(key(8, 0) + varint(int(v)) for v in array.bool_val)
    return out


def request_from_arrays(arrays: Iterable, signature_name: str = "") -> bytes:
    """A PredictRequest from (name, encoded ArrayProto bytes) pairs; a bytes name goes on the wire as is."""
    out = length_delimited(1, signature_name.encode()) if signature_name else b""
    for name, array_bytes in arrays:
        raw_name = name if isinstance(name, bytes) else name.encode()
        out += length_delimited(2, length_delimited(1, raw_name) + length_delimited(2, array_bytes))
    return out
