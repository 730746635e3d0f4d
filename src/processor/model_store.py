"""Where model files live. Discovery reads through this interface only, so remote stores (OSS, HDFS)
plug in without touching the discovery rules; the cache (model_cache.py) downloads through it."""
from __future__ import annotations

import os
import posixpath
import shutil
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


def resolve_in_remote_directory(directory: str, name: str) -> str:
    """What a state file on a remote store means by `name`: a URL as it is; a relative name inside
    `directory`; an absolute local path (a trainer that saved locally, then uploaded) by its base name
    inside `directory`, since that path does not exist on the store."""
    if "://" in name:
        return name
    if name.startswith("/"):
        return posixpath.join(directory, posixpath.basename(name))
    return posixpath.join(directory, name)


def open_model_store(config) -> ModelStore:
    """The store `config.model_store_type` names, over the config's directories (a ProcessorConfig)."""
    if config.model_store_type == "local":
        return LocalModelStore()
    from .errors import ConfigError
    from .remote_store import RemoteModelStore  # the SDKs are imported only by those who use them
    roots = [config.savedmodel_dir, config.checkpoint_dir]
    try:
        if config.model_store_type == "oss":
            from .oss_store import OssTransport
            transport = OssTransport(config.oss_endpoint, config.oss_access_id, config.oss_access_key)
        else:
            from .hdfs_store import WebHdfsTransport
            transport = WebHdfsTransport(config.savedmodel_dir, config.webhdfs_url, config.hdfs_user)
    except ImportError as e:
        raise ConfigError("model_store_type", f"'{config.model_store_type}' needs the {e.name} package: "
                          f"pip install 'processor[{config.model_store_type}]'") from None
    return RemoteModelStore(transport, roots, retries=config.download_retries)
