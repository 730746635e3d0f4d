"""Where model files live. Discovery reads through this interface only, so remote stores (OSS, HDFS)
plug in without touching the discovery rules."""
from __future__ import annotations

import os
from typing import List, Protocol


class ModelStore(Protocol):
    def join(self, *parts: str) -> str: ...
    def list_dir(self, path: str) -> List[str]:
        """Names (not paths) in a directory; [] when it does not exist."""
    def is_dir(self, path: str) -> bool: ...
    def is_readable_file(self, path: str) -> bool: ...
    def size(self, path: str) -> int: ...
    def read_text(self, path: str) -> str: ...


class LocalModelStore:
    """The local filesystem."""

    def join(self, *parts: str) -> str:
        return os.path.join(*parts)

    def list_dir(self, path: str) -> List[str]:
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def is_readable_file(self, path: str) -> bool:
        return os.path.isfile(path) and os.access(path, os.R_OK)

    def size(self, path: str) -> int:
        return os.path.getsize(path)

    def read_text(self, path: str) -> str:
        with open(path, encoding="utf-8") as f:
            return f.read()
