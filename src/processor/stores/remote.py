"""A remote model store (OSS, HDFS) seen through one listing per poll.

Discovery asks many small questions (is this a directory, how large is that index, which shards are
there). A remote store answers them from a snapshot that `refresh()` takes with a recursive listing of
the configured roots: a poll costs a few list calls whatever discovery asks. The one read discovery
makes, a `checkpoint` state file, is fetched only when the listing shows it changed (its size or tag).
Downloads resume with range reads and retry transient failures with backoff.
"""
from __future__ import annotations

import logging
import posixpath
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Dict, Iterable, List, Protocol, Set, Tuple

from ..backoff import exponential_delay
from ..errors import StoreError
from .base import FileInfo, resolve_in_remote_directory

logger = logging.getLogger(__name__)

RETRY_BASE_SECONDS = 0.2


class StoreTransport(Protocol):
    """The calls a remote store makes; each raises StoreError (transient or not) saying what failed."""

    def list_files(self, root: str) -> List[FileInfo]:
        """Every file below `root` (a directory path without a trailing slash), recursively."""
    def read_bytes(self, path: str) -> bytes: ...
    def read_into(self, path: str, out: BinaryIO, offset: int) -> None:
        """Writes the file's bytes from `offset` to its end into `out`."""


@dataclass
class _Snapshot:
    files: Dict[str, FileInfo] = field(default_factory=dict)
    children: Dict[str, Set[str]] = field(default_factory=dict)  # directory -> names in it

    def add(self, info: FileInfo, root: str) -> None:
        self.files[info.path] = info
        path = info.path
        while path != root and "/" in path:
            parent, name = path.rsplit("/", 1)
            self.children.setdefault(parent, set()).add(name)
            path = parent

    def add_root(self, root: str) -> None:
        self.children.setdefault(root, set())


def _strip(path: str) -> str:
    return path.rstrip("/") if not path.endswith("://") else path


class RemoteModelStore:
    """ModelStore over a StoreTransport; see the module docstring."""

    is_remote = True

    def __init__(self, transport: StoreTransport, roots: Iterable[str], retries: int = 3):
        self.transport = transport
        self.retries = retries
        self._roots = _outermost(_strip(r) for r in roots if r)
        self._snapshot = _Snapshot()
        self._texts: Dict[str, Tuple[int, str, str]] = {}  # path -> (size, tag, text) last read

    def join(self, *parts: str) -> str:
        return posixpath.join(*parts)

    def refresh(self) -> None:
        snapshot = _Snapshot()
        for root in self._roots:
            snapshot.add_root(root)
            for info in self.transport.list_files(root):
                snapshot.add(info, root)
        self._snapshot = snapshot  # one assignment: readers see the old listing or the new one

    def list_dir(self, path: str) -> List[str]:
        return sorted(self._snapshot.children.get(_strip(path), ()))

    def is_dir(self, path: str) -> bool:
        return _strip(path) in self._snapshot.children

    def is_readable_file(self, path: str) -> bool:
        return path in self._snapshot.files

    def size(self, path: str) -> int:
        return self._info(path).size

    def read_text(self, path: str) -> str:
        info = self._info(path)
        cached = self._texts.get(path)
        if cached and cached[:2] == (info.size, info.tag):
            return cached[2]
        text = self.transport.read_bytes(path).decode("utf-8")
        self._texts[path] = (info.size, info.tag, text)
        return text

    def resolve(self, directory: str, name: str) -> str:
        return resolve_in_remote_directory(directory, name)

    def files_under(self, directory: str) -> List[FileInfo]:
        prefix = _strip(directory) + "/"
        return sorted((f for p, f in self._snapshot.files.items() if p.startswith(prefix)), key=lambda f: f.path)

    def download(self, path: str, local_path: str, size: int) -> None:
        """Downloads with up to `retries` retries of transient failures, each resuming where the last
        stopped (a range read), with exponential backoff. Checks the size against the listing."""
        attempt = 0
        with open(local_path, "wb") as out:
            while True:
                try:
                    self.transport.read_into(path, out, out.tell())
                    out.flush()
                    break
                except StoreError as error:
                    if not error.transient or attempt >= self.retries:
                        raise
                    attempt += 1
                    delay = exponential_delay(RETRY_BASE_SECONDS, attempt)
                    logger.info("%s; retry %d of %d in %.1f s", error, attempt, self.retries, delay)
                    time.sleep(delay)
            written = out.tell()
        if written != size:
            raise StoreError(f"{path}: downloaded {written} bytes but the listing says {size} (changed meanwhile?)",
                             transient=True)

    def _info(self, path: str) -> FileInfo:
        info = self._snapshot.files.get(path)
        if info is None:
            raise FileNotFoundError(f"{path} is not in the store's listing")
        return info


def _outermost(roots: Iterable[str]) -> List[str]:
    """The roots to list: one listing of a directory covers every root inside it."""
    unique = sorted(set(roots))
    return [r for r in unique if not any(r != other and r.startswith(other + "/") for other in unique)]
