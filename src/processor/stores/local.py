"""The local filesystem as a model store."""
from __future__ import annotations

import os
import shutil
from typing import List

from .base import FileInfo


class LocalModelStore:
    """The local filesystem."""

    is_remote = False

    def join(self, *parts: str) -> str:
        return os.path.join(*parts)

    def refresh(self) -> None:
        pass

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

    def resolve(self, directory: str, name: str) -> str:
        return name if os.path.isabs(name) else os.path.join(directory, name)

    def files_under(self, directory: str) -> List[FileInfo]:
        found = []
        for parent, _, names in os.walk(directory):
            for name in names:
                path = os.path.join(parent, name)
                found.append(FileInfo(path, os.path.getsize(path), str(os.stat(path).st_mtime_ns)))
        return sorted(found, key=lambda f: f.path)

    def download(self, path: str, local_path: str, size: int) -> None:
        shutil.copyfile(path, local_path)
