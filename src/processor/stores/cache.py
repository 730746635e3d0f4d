"""Versions of a remote model store, copied into a local directory that TensorFlow loads from.

A version (a SavedModel directory, or a checkpoint prefix's index and data shards) is downloaded into a
temporary directory beside the cache, each file checked against the listing's size, and renamed into
place only when every file is there: a version is never loaded from a partial download. Files download
in parallel (`download_threads`), each retried with backoff by the store. A version already cached
with the listing's sizes and tags is not downloaded again, across restarts too. Versions the processor
no longer keeps (`retain`) are deleted.

One process owns a cache directory at a time (an flock); a second process with the same config gets a
private directory, removed when it closes.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import posixpath
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, List

from ..errors import StoreError
from .base import FileInfo, ModelStore

logger = logging.getLogger(__name__)

MANIFEST = ".processor-manifest.json"
PARTIAL_PREFIX = ".partial-"


def default_cache_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "processor-cache")


class ModelCache:
    def __init__(self, store: ModelStore, directory: str, source_root: str, threads: int):
        self._store = store
        self._threads = threads
        # One subdirectory per model source: two models may share local_cache_dir.
        self.directory = os.path.join(directory, _entry_name(source_root))
        self._private = False
        self._lock_file = self._take(self.directory)

    # ---- what the loader asks for

    def savedmodel(self, remote_dir: str) -> str:
        """The local copy of a SavedModel directory (given with a trailing slash or without)."""
        return self._fetch(remote_dir, self._store.files_under(remote_dir), remote_dir.rstrip("/"))

    def checkpoint(self, remote_prefix: str) -> str:
        """The local prefix of a checkpoint's copy (its .index and .data-* files)."""
        directory, base = posixpath.split(remote_prefix)
        files = [f for f in self._store.files_under(directory)
                 if "/" not in f.path[len(directory) + 1:] and
                 (f.path == remote_prefix + ".index" or f.path.startswith(remote_prefix + ".data-"))]
        return os.path.join(self._fetch(remote_prefix, files, directory), base)

    def retain(self, remote_paths: Iterable[str]) -> None:
        """Deletes every cached version but these."""
        keep = set(remote_paths)
        for name in os.listdir(self.directory):
            entry = os.path.join(self.directory, name)
            if name.startswith(PARTIAL_PREFIX) or not os.path.isdir(entry):
                continue
            source = _read_manifest(entry).get("source")
            if source not in keep:
                shutil.rmtree(entry, ignore_errors=True)
                logger.info("removed %s from the local cache", source or entry)

    def close(self) -> None:
        if self._private:
            shutil.rmtree(self.directory, ignore_errors=True)
        if self._lock_file is not None:
            self._lock_file.close()

    # ---- internals

    def _take(self, directory: str):
        """Locks `directory` for this process, or makes a private one when another process holds it."""
        try:
            os.makedirs(directory, exist_ok=True)
            lock = open(os.path.join(directory, ".lock"), "a")
        except OSError as e:
            raise StoreError(f"cannot use local_cache_dir {os.path.dirname(directory)}: {e.strerror}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            self._private = True
            self.directory = tempfile.mkdtemp(prefix=os.path.basename(directory) + "-", dir=os.path.dirname(directory))
            logger.info("local cache %s is in use by another process: caching in %s", directory, self.directory)
            return None
        for name in os.listdir(directory):  # downloads a crashed process left behind
            if name.startswith(PARTIAL_PREFIX):
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
        return lock

    def _fetch(self, remote: str, files: List[FileInfo], base: str) -> str:
        if not files:
            raise StoreError(f"{remote}: the store lists no files for it (deleted meanwhile?)")
        manifest = {"source": remote, "files": {f.path[len(base) + 1:]: [f.size, f.tag] for f in files}}
        entry = os.path.join(self.directory, _entry_name(remote))
        if _read_manifest(entry) == manifest:
            return entry
        total = sum(f.size for f in files)
        free = shutil.disk_usage(self.directory).free
        if total > free:
            raise StoreError(f"cannot cache {remote}: local_cache_dir {self.directory} has {free} bytes free, "
                             f"the version needs {total}")
        partial = tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=self.directory)
        try:
            self._download_all(files, base, partial, remote)
            with open(os.path.join(partial, MANIFEST), "w") as f:
                json.dump(manifest, f)
            shutil.rmtree(entry, ignore_errors=True)  # a stale copy (the store's files changed)
            os.rename(partial, entry)
        except OSError as e:
            shutil.rmtree(partial, ignore_errors=True)
            reason = "no space left on device" if e.errno == errno.ENOSPC else e.strerror or str(e)
            raise StoreError(f"cannot cache {remote} in local_cache_dir {self.directory}: {reason}") from None
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        logger.info("cached %s (%d files, %d bytes) in %s", remote, len(files), total, entry)
        return entry

    def _download_all(self, files: List[FileInfo], base: str, partial: str, remote: str) -> None:
        def download(info: FileInfo) -> None:
            local = os.path.join(partial, info.path[len(base) + 1:])
            os.makedirs(os.path.dirname(local), exist_ok=True)
            self._store.download(info.path, local, info.size)

        with ThreadPoolExecutor(max_workers=min(self._threads, len(files)),
                                thread_name_prefix="processor-download") as pool:
            futures = [pool.submit(download, info) for info in files]
        errors = [e for e in (f.exception() for f in futures) if e is not None]
        if errors:
            disk = next((e for e in errors if isinstance(e, OSError)), None)
            if disk is not None:
                raise disk
            raise StoreError(f"cannot download {remote}: {errors[0]}", transient=True)


def _entry_name(remote: str) -> str:
    """A directory name for a store path: readable, and unique by its hash."""
    digest = hashlib.sha1(remote.encode("utf-8")).hexdigest()[:12]
    return f"{posixpath.basename(remote.rstrip('/')) or 'model'}-{digest}"


def _read_manifest(entry: str) -> dict:
    try:
        with open(os.path.join(entry, MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}
