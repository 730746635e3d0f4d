"""An embedding table's rows streamed from a TF checkpoint in blocks, without TensorFlow: the index
says where the tensor's bytes are in which data shard, and they are read a block of rows at a time, so
importing a table of any size takes bounded memory. As TensorFlow's restore does, every tensor's bytes
are checked against the CRC-32C its index entry holds: a corrupt tensor raises ModelLoadError once its
last byte is read (after the rows it streamed, before anything may count them as imported)."""
from __future__ import annotations

import glob
import os
from typing import Iterator, Optional, Tuple

import numpy as np

from .. import _core, predict_pb2, tensors
from ..errors import ModelLoadError
from ..formats.checkpoint_index import CheckpointIndexError, TensorEntry, read_index, read_slices
from ..formats.tfrecord import mask

_CHECK_BYTES = 8 << 20  # read at a time where only the CRC needs the bytes


def _entry(prefix: str, name: str, what: str = "tensor") -> TensorEntry:
    """The index entry of `name`; ModelLoadError when the index cannot be read or lacks it."""
    try:
        entry = read_index(prefix).get(name)
    except CheckpointIndexError as e:
        raise ModelLoadError(str(e)) from None
    if entry is None:
        raise ModelLoadError(f"{prefix} has no {what} '{name}'")
    return entry


def _numpy_dtype(entry: TensorEntry) -> np.dtype:
    """The little-endian numpy dtype of a numeric entry's bytes."""
    return np.dtype(tensors.numpy_dtype(entry.dtype)).newbyteorder("<")


def table_entry(prefix: str, name: str) -> TensorEntry:
    """The index entry of a 2-D numeric variable; ModelLoadError says what is wrong."""
    entry = _entry(prefix, name, "variable")
    if len(entry.shape) != 2 or entry.dtype == predict_pb2.DT_STRING:
        raise ModelLoadError(f"'{name}' in {prefix} is not a 2-D numeric table (shape {list(entry.shape)})")
    return entry


def _open_data(prefix: str, name: str, entry: TensorEntry):
    """The data shard holding `name`, opened and positioned at its bytes."""
    shards = glob.glob(f"{glob.escape(prefix)}.data-{entry.shard_id:05d}-of-*")
    if len(shards) != 1:
        raise ModelLoadError(f"{prefix}: data shard {entry.shard_id} of '{name}' is missing")
    f = open(shards[0], "rb")
    if os.fstat(f.fileno()).st_size < entry.offset + entry.size:
        f.close()
        raise ModelLoadError(f"{shards[0]} is truncated: '{name}' needs bytes up to {entry.offset + entry.size}")
    f.seek(entry.offset)
    return f


def _rows_entry(prefix: str, name: str, first_row: int, count: Optional[int]) -> Tuple[TensorEntry, int, int]:
    """(the entry holding rows [first_row, first_row + count) of `name`, the first of them in it, how
    many). A partitioned variable's rows are in its slices (contiguous along dim 0): the slice that
    starts at first_row must hold exactly those rows."""
    entry = table_entry(prefix, name)
    rows = entry.shape[0]
    count = rows - first_row if count is None else count
    if not (0 <= first_row and 0 <= count and first_row + count <= rows):
        raise ModelLoadError(f"rows [{first_row}, {first_row + count}) are outside '{name}' in {prefix} ({rows} rows)")
    if entry.size or not rows:
        return entry, first_row, count
    try:
        parts = read_slices(prefix).get(name, [])
    except CheckpointIndexError as e:
        raise ModelLoadError(str(e)) from None
    start = 0
    for part in parts:
        if start == first_row and part.shape[0] == count:
            return part, 0, count
        start += part.shape[0]
    raise ModelLoadError(f"'{name}' in {prefix} has no saved slice of rows [{first_row}, {first_row + count})")


def iter_rows(prefix: str, name: str, block_rows: int = 8192, first_row: int = 0,
              count: Optional[int] = None) -> Iterator[Tuple[int, np.ndarray]]:
    """(row id, rows [n, dim]) for consecutive blocks of at most `block_rows` rows, of rows
    [first_row, first_row + count) (default: all), ids counted from first_row. A partitioned
    variable's part is such a range, saved as a slice of the variable."""
    entry, local_first, count = _rows_entry(prefix, name, first_row, count)
    dtype = _numpy_dtype(entry)
    rows, dim = entry.shape
    row_bytes = dim * dtype.itemsize
    if entry.size != rows * row_bytes:
        raise ModelLoadError(f"'{name}' in {prefix}: {entry.size} bytes for a [{rows}, {dim}] {dtype} table")
    with _open_data(prefix, name, entry) as f:
        # The CRC covers the whole tensor: the rows before and after the range are read for it too.
        crc = _crc_of(f, local_first * row_bytes, 0)
        for first in range(first_row, first_row + count, block_rows):
            n = min(block_rows, first_row + count - first)
            data = f.read(n * row_bytes)
            crc = _core.crc32c(data, crc)
            yield first, np.frombuffer(data, dtype=dtype).reshape(n, dim)
        crc = _crc_of(f, entry.size - (local_first + count) * row_bytes, crc)
        _check_crc(prefix, name, entry, crc)


def iter_values(prefix: str, name: str, block: int = 65536) -> Iterator[np.ndarray]:
    """A 1-D numeric tensor (an EmbeddingVariable's keys) in blocks of at most `block` values; its
    CRC-32C is checked once its last byte is read, as iter_rows does."""
    entry = _entry(prefix, name)
    if len(entry.shape) != 1 or entry.dtype == predict_pb2.DT_STRING:
        raise ModelLoadError(f"'{name}' in {prefix} is not a 1-D numeric tensor (shape {list(entry.shape)})")
    dtype = _numpy_dtype(entry)
    count = entry.shape[0]
    if entry.size != count * dtype.itemsize:
        raise ModelLoadError(f"'{name}' in {prefix}: {entry.size} bytes for {count} values of {dtype}")
    with _open_data(prefix, name, entry) as f:
        crc = 0
        for first in range(0, count, block):
            data = f.read(min(block, count - first) * dtype.itemsize)
            crc = _core.crc32c(data, crc)
            yield np.frombuffer(data, dtype=dtype)
        _check_crc(prefix, name, entry, crc)


def _crc_of(f, size: int, crc: int) -> int:
    """`crc` extended by the next `size` bytes of `f`."""
    while size > 0:
        data = f.read(min(size, _CHECK_BYTES))
        if not data:
            break
        crc = _core.crc32c(data, crc)
        size -= len(data)
    return crc


def _check_crc(prefix: str, name: str, entry: TensorEntry, crc: int) -> None:
    if mask(crc) != entry.crc32c:
        raise ModelLoadError(f"'{name}' in {prefix} is corrupt: its bytes fail the CRC-32C check its checkpoint "
                             f"index holds (TensorFlow's restore refuses it too)")


def read_tensor(prefix: str, name: str) -> np.ndarray:
    """A whole numeric tensor (a delta's row ids or rows: small)."""
    entry = _entry(prefix, name)
    if entry.dtype == predict_pb2.DT_STRING:
        raise ModelLoadError(f"'{name}' in {prefix} is not numeric")
    dtype = _numpy_dtype(entry)
    count = int(np.prod(entry.shape, dtype=np.int64))
    if entry.size != count * dtype.itemsize:
        raise ModelLoadError(f"'{name}' in {prefix}: {entry.size} bytes for shape {list(entry.shape)} of {dtype}")
    with _open_data(prefix, name, entry) as f:
        data = f.read(entry.size)
    _check_crc(prefix, name, entry, _core.crc32c(data))
    return np.frombuffer(data, dtype=dtype).reshape(entry.shape)
