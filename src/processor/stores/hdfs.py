"""HDFS as a model store, over WebHDFS (fsspec's WebHDFS client on `requests`).

WebHDFS needs only HTTP access to the NameNode (and the DataNodes it redirects reads to): no JVM, no
libhdfs, no Hadoop configuration on the serving host, which pyarrow's HadoopFileSystem would need.
Paths are `hdfs://namenode[:port]/path`; the WebHDFS address is `webhdfs_url` (default
`http://<namenode>:9870`, Hadoop 3's NameNode HTTP port), the user `hdfs_user` (default
`HADOOP_USER_NAME`, else the process's user) with simple authentication. Listing is one LISTSTATUS
per directory under the roots.
"""
from __future__ import annotations

import getpass
import os
from typing import BinaryIO, Callable, List, TypeVar
from urllib.parse import urlparse

import requests
from fsspec.implementations.webhdfs import WebHDFS

from ..errors import ConfigError, StoreError
from .base import FileInfo

DEFAULT_WEBHDFS_PORT = 9870
CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = (10, 60)  # connect, read

T = TypeVar("T")


def split_hdfs_url(url: str) -> tuple:
    """'hdfs://nn:8020/a/b' -> ('nn', '/a/b')."""
    parsed = urlparse(url)
    if parsed.scheme != "hdfs":
        raise ValueError(f"{url!r} is not an hdfs:// URL")
    return parsed.hostname or "", parsed.path.rstrip("/") or "/"


class _TimeoutSession(requests.Session):
    """fsspec's WebHDFS sets no timeout: a NameNode that stops answering would hang a poll for ever."""

    def request(self, *args, **kwargs):
        kwargs.setdefault("timeout", TIMEOUT_SECONDS)
        return super().request(*args, **kwargs)


class WebHdfsTransport:
    """The StoreTransport of HDFS."""

    @classmethod
    def from_config(cls, config) -> "WebHdfsTransport":
        return cls(config.savedmodel_dir, config.webhdfs_url, config.hdfs_user)

    def __init__(self, root_url: str, webhdfs_url: str = "", user: str = ""):
        namenode, _ = split_hdfs_url(root_url)
        address = urlparse(webhdfs_url or f"http://{namenode}:{DEFAULT_WEBHDFS_PORT}")
        if address.scheme not in ("http", "https") or not address.hostname:
            raise ConfigError("webhdfs_url", f"must be http(s)://host:port, got {webhdfs_url!r}")
        self._prefix = root_url[: len(root_url) - len(urlparse(root_url).path)]  # hdfs://namenode[:port]
        self._fs = WebHDFS(address.hostname, port=address.port or DEFAULT_WEBHDFS_PORT,
                           use_https=address.scheme == "https", skip_instance_cache=True,
                           user=user or os.environ.get("HADOOP_USER_NAME") or getpass.getuser())
        session = _TimeoutSession()
        session.verify, session.cert, session.auth = self._fs.session.verify, self._fs.session.cert, self._fs.session.auth
        self._fs.session = session

    def list_files(self, root: str) -> List[FileInfo]:
        top = split_hdfs_url(root)[1]
        files, pending = [], [top]
        while pending:
            directory = pending.pop()
            try:
                entries = self._call(f"list {self._url(directory)}", lambda: self._fs.ls(directory, detail=True))
            except StoreError as error:
                if directory == top and "FileNotFoundException" in str(error):
                    return []  # no such directory yet: nothing to serve, like an empty local directory
                raise
            for entry in entries:
                if entry["type"] == "directory":
                    pending.append(entry["name"])
                else:
                    files.append(FileInfo(self._url(entry["name"]), entry["size"], str(entry.get("modificationTime", ""))))
        return files

    def read_bytes(self, path: str) -> bytes:
        return self._call(f"read {path}", lambda: self._fs.cat_file(split_hdfs_url(path)[1]))

    def read_into(self, path: str, out: BinaryIO, offset: int) -> None:
        what = f"download {path}" + (f" from byte {offset}" if offset else "")
        source = self._call(what, lambda: self._fs.open(split_hdfs_url(path)[1], "rb", block_size=CHUNK_BYTES))
        with source:
            source.seek(offset)
            while True:
                chunk = self._call(what, lambda: source.read(CHUNK_BYTES))
                if not chunk:
                    break
                out.write(chunk)  # local errors (a full disk) are the cache's to report

    def _url(self, path: str) -> str:
        return self._prefix + path

    @staticmethod
    def _call(what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except PermissionError as e:  # AccessControlException
            raise StoreError(f"WebHDFS {what}: AccessControlException: {e} (check hdfs_user)") from None
        except FileNotFoundError as e:
            raise StoreError(f"WebHDFS {what}: FileNotFoundException: {e}") from None
        except (RuntimeError, ValueError) as e:  # other RemoteExceptions: standby NameNode, safe mode...
            raise StoreError(f"WebHDFS {what}: {e}", transient=True) from None
        except requests.HTTPError as e:
            status = e.response.status_code if e.response is not None else 0
            raise StoreError(f"WebHDFS {what}: HTTP {status}", transient=status >= 500 or status == 429) from None
        except requests.RequestException as e:
            raise StoreError(f"WebHDFS {what}: network error: {type(e).__name__}", transient=True) from None
