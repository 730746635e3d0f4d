"""Where an imported table's rows come from, read in blocks of (ids, rows) so that a table of any size
takes bounded memory:

- CheckpointTable: a 2-D variable of a TF checkpoint; row i has id i.
- EmbeddingVariableTable: a DeepRec EmbeddingVariable in a checkpoint, its rows keyed by id
  (embedding_var_ckpt_data.cc, ExportToCkpt: `<name>-keys` [n], `<name>-values` [n, dim]).
- MonolithTable: a Monolith hash-table dump, TFRecord shards `<name>-<i>-of-<n>` of EntryDump records
  (monolith/native_training/runtime/hash_table/embedding_hash_table.proto: `sfixed64 id = 1`,
  `repeated float num = 2`, optimizer state and timestamps skipped), read by the data plane's reader;
  `layout_filters` choose which shards this instance loads.
"""
from __future__ import annotations

import os
import re
import struct
from typing import Iterable, Iterator, List, Optional, Tuple

import numpy as np

from .. import _core, tensors
from ..errors import ModelLoadError
from ..formats.checkpoint_index import CheckpointIndexError, read_index
from .checkpoint_rows import iter_rows, iter_values, table_entry
from .layout_filters import LayoutFilter, select_shards

Block = Tuple[np.ndarray, np.ndarray]  # (int64 ids [n], rows [n, dim])


class CheckpointTable:
    """Rows of `variable` in a checkpoint, or rows [first_row, first_row + rows) of it (a part of a
    partitioned variable, whose ids start at 0)."""

    def __init__(self, prefix: str, variable: str, first_row: int = 0, rows: Optional[int] = None):
        entry = table_entry(prefix, variable)
        self.prefix, self.variable, self.first_row = prefix, variable, first_row
        self.saved_rows = entry.shape[0]
        self.rows = self.saved_rows - first_row if rows is None else rows
        self.dim = entry.shape[1]
        self.dtype = np.dtype(tensors.numpy_dtype(entry.dtype)).newbyteorder("<")
        if self.dtype.kind != "f":
            raise ModelLoadError(f"'{variable}' in {prefix} is {self.dtype}, not floating point")

    def identity(self) -> list:
        """What the rows are, across machines: the checkpoint's index (which holds each tensor's CRC32C)
        and which rows of which variable."""
        import hashlib  # here: hashing loads OpenSSL, which local stores must never load (test_remote_stores.py)
        try:
            with open(self.prefix + ".index", "rb") as f:
                index = hashlib.sha256(f.read()).hexdigest()
        except OSError as e:
            raise ModelLoadError(f"cannot read {self.prefix}.index: {e.strerror}") from None
        return ["checkpoint", index, self.variable, self.first_row, self.rows]

    @property
    def source(self) -> str:
        whole = self.first_row == 0 and self.rows == self.saved_rows
        return f"{self.prefix}:{self.variable}" + ("" if whole else f"[{self.first_row}:{self.first_row + self.rows}]")

    def blocks(self, block_rows: int) -> Iterator[Block]:
        for first, rows in iter_rows(self.prefix, self.variable, block_rows, self.first_row, self.rows):
            first -= self.first_row
            yield np.arange(first, first + len(rows), dtype=np.int64), rows


class EmbeddingVariableTable:
    def __init__(self, prefix: str, name: str):
        self.prefix, self.name = prefix, name
        values = table_entry(prefix, name + "-values")
        self.dim = values.shape[1]
        self.saved_rows = values.shape[0]
        try:
            keys = read_index(prefix).get(name + "-keys")
        except CheckpointIndexError as e:
            raise ModelLoadError(str(e)) from None
        if keys is None or tuple(keys.shape) != (self.saved_rows,):
            raise ModelLoadError(f"{prefix}: '{name}-keys' holds {'no ids' if keys is None else f'shape {list(keys.shape)}'}"
                                 f" for {self.saved_rows} rows")
        self.rows = None  # keyed by any id, as DeepRec's EVs are
        self.dtype = np.dtype(tensors.numpy_dtype(values.dtype)).newbyteorder("<")
        if self.dtype.kind != "f":
            raise ModelLoadError(f"'{name}-values' in {prefix} is {self.dtype}, not floating point")

    def identity(self) -> list:
        import hashlib  # here: hashing loads OpenSSL, which local stores must never load
        try:
            with open(self.prefix + ".index", "rb") as f:
                index = hashlib.sha256(f.read()).hexdigest()
        except OSError as e:
            raise ModelLoadError(f"cannot read {self.prefix}.index: {e.strerror}") from None
        return ["embedding_variable", index, self.name]

    @property
    def source(self) -> str:
        return f"{self.prefix}:{self.name} (a DeepRec EmbeddingVariable)"

    def blocks(self, block_rows: int) -> Iterator[Block]:
        """The keys and values side by side, a block of each at a time: bounded memory for any size."""
        keys = iter_values(self.prefix, self.name + "-keys", block_rows)  # as many as the rows (checked above)
        for (_, rows), ids in zip(iter_rows(self.prefix, self.name + "-values", block_rows, 0, self.saved_rows), keys):
            yield ids.astype(np.int64), rows
        for _ in keys:  # finishes the keys' CRC check
            pass


_SHARD = re.compile(r"^(?P<name>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})$")


def monolith_shards(directory: str, name: str) -> List[str]:
    """Every shard of table `name` in `directory`, in order; ModelLoadError when some are missing."""
    try:
        files = sorted(os.listdir(directory))
    except OSError as e:
        raise ModelLoadError(f"cannot list Monolith table directory {directory}: {e.strerror}") from None
    shards = [(m, f) for f in files if (m := _SHARD.match(f)) and m.group("name") == name]
    if not shards:
        raise ModelLoadError(f"{directory} has no shard of table '{name}' ({name}-00000-of-0000N)")
    counts = {int(m.group("count")) for m, _ in shards}
    indices = sorted(int(m.group("index")) for m, _ in shards)
    if len(counts) != 1 or indices != list(range(counts.pop())):
        raise ModelLoadError(f"the shards of table '{name}' in {directory} are incomplete or of different runs: "
                             f"{', '.join(f for _, f in shards)}")
    return [os.path.join(directory, f) for _, f in shards]


class MonolithTable:
    def __init__(self, directory: str, name: str, filters: Iterable[LayoutFilter] = ()):
        self.directory, self.name = directory, name
        every = monolith_shards(directory, name)
        self.shards = [os.path.join(directory, f) for f in select_shards([os.path.basename(p) for p in every], filters)]
        if not self.shards:
            raise ModelLoadError(f"layout_filters keep no shard of table '{name}' in {directory}")
        self.dim = self._first_dim()
        self.rows = None  # not known before reading: hash tables hold arbitrary ids
        self.dtype = np.dtype("<f4")

    def identity(self) -> list:
        """What the rows are: the shards this instance loads (after layout_filters), by name, size and
        modification time; a newer dump, or another selection of shards, is another identity."""
        shards = []
        for path in self.shards:
            try:
                stat = os.stat(path)
            except OSError as e:
                raise ModelLoadError(f"cannot read Monolith shard {path}: {e.strerror}") from None
            shards.append([os.path.basename(path), stat.st_size, stat.st_mtime_ns])
        return ["monolith", self.name, self.dim, shards]

    @property
    def source(self) -> str:
        return f"monolith:{self.directory}/{self.name} ({len(self.shards)} shards)"

    def _first_dim(self) -> int:
        for path in self.shards:
            for _, rows in self._blocks(path, 1):
                return rows.shape[1]
        raise ModelLoadError(f"the shards of table '{self.name}' in {self.directory} hold no entry")

    @staticmethod
    def _blocks(path: str, block_rows: int) -> Iterator[Block]:
        """The data plane's reader (cpp/feature_store/monolith_dump.cc), which checks every record's CRC."""
        try:
            shard = _core.MonolithShard(path)
            while (block := shard.read(block_rows)) is not None:
                yield block
        except _core.LoadError as e:
            raise ModelLoadError(str(e)) from None

    def blocks(self, block_rows: int) -> Iterator[Block]:
        for path in self.shards:
            for ids, rows in self._blocks(path, block_rows):
                if rows.shape[1] != self.dim:
                    raise ModelLoadError(f"{path}: entries have {rows.shape[1]} numbers, the table {self.dim}")
                yield ids, rows


def encode_entry_dump(entry_id: int, numbers: np.ndarray) -> bytes:
    """An EntryDump record as Monolith writes it (proto2: repeated float unpacked); for tests and tools."""
    out = b"\x09" + struct.pack("<q", entry_id)
    for value in np.asarray(numbers, dtype="<f4"):
        out += b"\x15" + value.tobytes()
    return out
