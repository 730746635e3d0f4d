"""Lists the tensors of a TF checkpoint from its .index file, without TensorFlow.

The index is a LevelDB-format table (uncompressed, as TF writes it) mapping each tensor name to a
BundleEntryProto (dtype, shape, shard, offset, size); the empty key holds the BundleHeaderProto. A
partitioned variable is saved as slices: its own entry holds no bytes, and each slice has an entry of
its own under a binary key (0, the name in OrderedCode, then the slice's extents, which sort by start).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, List, Tuple

from google.protobuf.message import DecodeError

from .. import tensor_bundle_pb2

_FOOTER_SIZE = 48
_MAGIC = 0xDB4775248B80FB57
_BLOCK_TRAILER_SIZE = 5  # compression type byte + crc32c


class CheckpointIndexError(ValueError):
    pass


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int              # tensorflow DataType (== ArrayDataType numbering)
    shape: Tuple[int, ...]
    shard_id: int
    size: int
    offset: int = 0          # where its bytes start in the data shard
    crc32c: int = 0          # of its bytes, masked (tensor_bundle.cc: crc32c::Mask)


def read_varint(data: bytes, pos: int) -> Tuple[int, int]:
    """(value, position after it) of the base-128 varint at `pos` (LevelDB's and protobuf's)."""
    result, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise CheckpointIndexError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _block(data: bytes, handle: Tuple[int, int]) -> bytes:
    offset, size = handle
    if offset + size + _BLOCK_TRAILER_SIZE > len(data):
        raise CheckpointIndexError(f"block at {offset} (+{size}) runs past the end of the file")
    if data[offset + size] != 0:
        raise CheckpointIndexError(f"block at {offset} is compressed (type {data[offset + size]}); TF writes none")
    return data[offset:offset + size]


def _entries(block: bytes):
    """(key, value) pairs of a table block: prefix-compressed keys, then a restart array."""
    if len(block) < 4:
        raise CheckpointIndexError("block too short")
    (restarts,) = struct.unpack("<I", block[-4:])
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise CheckpointIndexError("bad restart count")
    pos, key = 0, b""
    while pos < end:
        shared, pos = read_varint(block, pos)
        unshared, pos = read_varint(block, pos)
        value_size, pos = read_varint(block, pos)
        if shared > len(key) or pos + unshared + value_size > end:
            raise CheckpointIndexError("corrupt block entry")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + value_size]
        pos += value_size


def _ordered_code_string(key: bytes, pos: int) -> Tuple[str, int]:
    """An OrderedCode string (0x00 is escaped as 00 FF, 0xFF as FF 00, the end is 00 01)."""
    out = bytearray()
    while pos + 1 < len(key):
        byte = key[pos]
        if byte == 0x00 and key[pos + 1] == 0x01:
            return out.decode("utf-8"), pos + 2
        if byte in (0x00, 0xFF):
            pos += 1  # the escape's second byte
        out.append(byte)
        pos += 1
    raise CheckpointIndexError("a slice key's tensor name is not terminated")


def read_index(prefix: str) -> Dict[str, TensorEntry]:
    """The tensors of the checkpoint at `prefix`, by name. CheckpointIndexError says what is wrong."""
    return _read(prefix)[0]


def read_slices(prefix: str) -> Dict[str, List[TensorEntry]]:
    """The saved slices of partitioned variables, by variable name, in the order of their first row."""
    return _read(prefix)[1]


def _read(prefix: str) -> Tuple[Dict[str, TensorEntry], Dict[str, List[TensorEntry]]]:
    try:
        with open(prefix + ".index", "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointIndexError(f"cannot read {prefix}.index: {e.strerror}") from None
    if len(data) < _FOOTER_SIZE or struct.unpack("<Q", data[-8:])[0] != _MAGIC:
        raise CheckpointIndexError(f"{prefix}.index is not a checkpoint index (bad footer)")
    footer = data[-_FOOTER_SIZE:]
    _, pos = read_varint(footer, 0)          # metaindex handle: offset
    _, pos = read_varint(footer, pos)        #                   size
    index_offset, pos = read_varint(footer, pos)
    index_size, pos = read_varint(footer, pos)
    tensors: Dict[str, TensorEntry] = {}
    slices: Dict[str, List[Tuple[bytes, TensorEntry]]] = {}
    try:
        for _, handle in _entries(_block(data, (index_offset, index_size))):
            offset, p = read_varint(handle, 0)
            size, _ = read_varint(handle, p)
            for key, value in _entries(_block(data, (offset, size))):
                if not key:
                    header = tensor_bundle_pb2.BundleHeaderProto.FromString(value)
                    if header.endianness != tensor_bundle_pb2.BundleHeaderProto.LITTLE:
                        raise CheckpointIndexError(f"{prefix} is a big-endian checkpoint")
                    continue
                entry = tensor_bundle_pb2.BundleEntryProto.FromString(value)
                if key[0] == 0x00:  # a slice of a partitioned variable
                    name, extents = _ordered_code_string(key, 1)
                    slices.setdefault(name, []).append((key[extents:], TensorEntry(
                        name, entry.dtype, tuple(d.size for d in entry.shape.dim), entry.shard_id, entry.size,
                        entry.offset, entry.crc32c)))
                    continue
                name = key.decode("utf-8")
                tensors[name] = TensorEntry(name, entry.dtype, tuple(d.size for d in entry.shape.dim),
                                            entry.shard_id, entry.size, entry.offset, entry.crc32c)
    except (DecodeError, UnicodeDecodeError) as e:
        raise CheckpointIndexError(f"{prefix}.index has a corrupt entry: {e}") from None
    except CheckpointIndexError as e:
        raise CheckpointIndexError(f"{prefix}.index: {e}") from None
    return tensors, {name: [entry for _, entry in sorted(parts)] for name, parts in slices.items()}
