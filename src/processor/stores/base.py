"""What every model store is: the interface discovery reads through (so remote stores plug in without
touching the discovery rules, and the cache downloads through it), and the files a listing shows."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import List, Protocol


@dataclass(frozen=True)
class FileInfo:
    """A file as a listing shows it."""
    path: str      # the store's full path (a local path, or oss://bucket/key, hdfs://host/path)
    size: int
    tag: str = ""  # changes when the content does: an ETag or a modification time


class ModelStore(Protocol):
    is_remote: bool

    def join(self, *parts: str) -> str: ...
    def refresh(self) -> None:
        """Takes a new look at the store. Remote stores answer the questions below from one listing
        taken here, so that a poll costs a few list calls; the local filesystem needs nothing."""
    def list_dir(self, path: str) -> List[str]:
        """Names (not paths) in a directory; [] when it does not exist."""
    def is_dir(self, path: str) -> bool: ...
    def is_readable_file(self, path: str) -> bool: ...
    def size(self, path: str) -> int: ...
    def read_text(self, path: str) -> str: ...
    def resolve(self, directory: str, name: str) -> str:
        """A path a state file in `directory` names (relative, or absolute)."""
    def files_under(self, directory: str) -> List[FileInfo]:
        """Every file below a directory, recursively."""
    def download(self, path: str, local_path: str, size: int) -> None:
        """Copies one file to a local path, which the caller owns; raises StoreError."""


def resolve_in_remote_directory(directory: str, name: str) -> str:
    """What a state file on a remote store means by `name`: a URL as it is; a relative name inside
    `directory`; an absolute local path (a trainer that saved locally, then uploaded) by its base name
    inside `directory`, since that path does not exist on the store."""
    if "://" in name:
        return name
    if name.startswith("/"):
        return posixpath.join(directory, posixpath.basename(name))
    return posixpath.join(directory, name)
