"""The disk tier's files (ev_storage_type 12, DRAM + SSD): a version's tables written into a directory
of their own under ev_storage_path, in the format of TierTable (protos/control.proto):
`<table>.rows` [rows, dim] float32 little-endian, and for a table keyed by id `<table>.ids` [rows]
int64 little-endian. The rows stream from their source a block at a time, so a table of any size takes
bounded memory.

The data plane maps the files and removes their names as it opens them (cpp/feature_store/tier_file.h);
the loader removes the directory after the load, whatever its outcome. A process that dies mid-import
leaves its directory (`processor-tier-<pid>-...`), which the next FeatureStore on that path deletes:
nothing a crash leaves is ever served.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
import time
from typing import Dict

import numpy as np

from .. import control_pb2
from ..errors import ModelLoadError

logger = logging.getLogger(__name__)

DIRECTORY_PREFIX = "processor-tier-"
_OURS = re.compile(re.escape(DIRECTORY_PREFIX) + r"(?P<pid>\d+)-")
BLOCK_ROWS = 65536


def clear_stale(path: str) -> None:
    """Deletes the import directories under `path` of processes that no longer run."""
    try:
        entries = os.listdir(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ModelLoadError(f"cannot list ev_storage_path {path}: {e.strerror}") from None
    for entry in entries:
        match = _OURS.match(entry)
        if match is None or _alive(int(match.group("pid"))):
            continue
        shutil.rmtree(os.path.join(path, entry), ignore_errors=True)
        logger.info("removed %s under ev_storage_path: a stopped process's unfinished import", entry)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_tables(path: str, label: str, sources: Dict[str, object]) -> control_pb2.TableSources:
    """Writes every table of `sources` (variable -> a source of table_sources.py) into a new directory
    under `path`; returns the TableSources that point the data plane at them (remove() deletes what
    is left of them after the load)."""
    try:
        os.makedirs(path, exist_ok=True)
        directory = tempfile.mkdtemp(prefix=f"{DIRECTORY_PREFIX}{os.getpid()}-{_safe(label)}-", dir=path)
    except OSError as e:
        raise ModelLoadError(f"cannot create the disk tier under ev_storage_path {path}: {e.strerror}") from None
    tables = []
    started = time.monotonic()
    try:
        for index, (variable, source) in enumerate(sorted(sources.items())):
            tables.append(_write_table(os.path.join(directory, f"t{index}"), variable, source))
    except OSError as e:
        shutil.rmtree(directory, ignore_errors=True)
        why = "the disk is full" if e.errno == errno.ENOSPC else e.strerror
        raise ModelLoadError(f"cannot write the disk tier under ev_storage_path {path}: {why}") from None
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    rows = sum(t.rows for t in tables)
    logger.info("disk tier: %d table(s), %d rows written under %s in %.1f s", len(tables), rows, path,
                time.monotonic() - started)
    return control_pb2.TableSources(tier_tables=tables, tier_directory=directory)


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:64]


def _write_table(base: str, variable: str, source) -> control_pb2.TierTable:
    keyed = getattr(source, "rows", None) is None  # an EmbeddingVariable or a Monolith dump: any id
    rows = 0
    with open(base + ".rows", "wb") as out_rows, open(base + ".ids", "wb") if keyed else _Nothing() as out_ids:
        for ids, block in source.blocks(BLOCK_ROWS):
            if not keyed and ids[0] != rows:
                raise ModelLoadError(f"'{variable}': its rows did not arrive in order (row {ids[0]}, expected {rows})")
            out_rows.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
            if keyed:
                out_ids.write(np.ascontiguousarray(ids, dtype="<i8").tobytes())
            rows += len(block)
    # Not fsync'ed: the files are never read after a crash (their names go when the data plane opens
    # them), so the kernel writes them back when it likes; space is allocated as they are written, so a
    # full disk still fails the write here.
    return control_pb2.TierTable(variable=variable, path=base, keyed=keyed, rows=rows)


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None


def remove(sources: control_pb2.TableSources) -> None:
    """Removes a load's import directory (its files' names; the data plane holds what it opened)."""
    if sources.tier_directory:
        shutil.rmtree(sources.tier_directory, ignore_errors=True)
