"""TFRecord files (TensorFlow's record format), read and written without TensorFlow's Python package.

A record is: uint64 length, uint32 masked CRC-32C of the length, the data, uint32 masked CRC-32C of the
data (all little-endian). The data plane's copy of the framing is cpp/common/tfrecord.h; tests read
each other's files (Monolith dumps written here, request logs written there).
"""
from __future__ import annotations

import struct
from typing import BinaryIO, Iterator, List

from .. import _core


def mask(crc: int) -> int:
    """The form TFRecords and checkpoint bundles store a CRC-32C in (crc32c::Mask)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The data plane's CRC-32C (cpp/common/crc32c.cc, one implementation for both languages), masked."""
    return mask(_core.crc32c(data))


class TFRecordError(ValueError):
    pass


def looks_like_tfrecord(head: bytes) -> bool:
    """Whether a file starting with `head` (at least 12 bytes) is a TFRecord file."""
    return len(head) >= 12 and struct.unpack("<I", head[8:12])[0] == masked_crc32c(head[:8])


def read_records(data: bytes) -> List[bytes]:
    """Every record of a TFRecord file's bytes; TFRecordError names the first bad record."""
    records, offset = [], 0
    while offset < len(data):
        index = len(records)
        if len(data) - offset < 12:
            raise TFRecordError(f"record {index}: truncated header at byte {offset}")
        header = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[offset + 8:offset + 12])[0] != masked_crc32c(header):
            raise TFRecordError(f"record {index}: length checksum mismatch at byte {offset}")
        start, end = offset + 12, offset + 12 + length
        if end + 4 > len(data):
            raise TFRecordError(f"record {index}: truncated ({length} bytes announced at byte {offset})")
        payload = data[start:end]
        if struct.unpack("<I", data[end:end + 4])[0] != masked_crc32c(payload):
            raise TFRecordError(f"record {index}: data checksum mismatch at byte {offset}")
        records.append(payload)
        offset = end + 4
    return records


def write_record(stream: BinaryIO, payload: bytes) -> None:
    header = struct.pack("<Q", len(payload))
    stream.write(header + struct.pack("<I", masked_crc32c(header)) + payload +
                 struct.pack("<I", masked_crc32c(payload)))


def iter_records(path: str) -> Iterator[bytes]:
    """The records of a TFRecord file, read one at a time (a file of any size takes one record's memory)."""
    with open(path, "rb") as f:
        index, offset = 0, 0
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise TFRecordError(f"{path}: record {index}: truncated header at byte {offset}")
            (length,) = struct.unpack("<Q", header[:8])
            if struct.unpack("<I", header[8:12])[0] != masked_crc32c(header[:8]):
                raise TFRecordError(f"{path}: record {index}: length checksum mismatch at byte {offset}")
            payload = f.read(length)
            footer = f.read(4)
            if len(payload) < length or len(footer) < 4:
                raise TFRecordError(f"{path}: record {index}: truncated ({length} bytes announced at byte {offset})")
            if struct.unpack("<I", footer)[0] != masked_crc32c(payload):
                raise TFRecordError(f"{path}: record {index}: data checksum mismatch at byte {offset}")
            yield payload
            index, offset = index + 1, offset + 16 + length
