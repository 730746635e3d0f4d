"""A protocol-level WebHDFS stand-in for fsspec's WebHDFS client (see standin_server.py for why): the
HDFS namespace is the directory `root`. Speaks the NameNode's REST API on 127.0.0.1: LISTSTATUS,
GETFILESTATUS, and OPEN answered with a 307 redirect to a "DataNode" (the same server) that streams the
bytes, with offset and length; errors are RemoteException JSON (FileNotFoundException,
AccessControlException for users other than the allowed ones, as simple authentication gives).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Iterable, Optional
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from standin_server import StandinHandler, StandinServer

PREFIX = "/webhdfs/v1"


def _status(path: str, suffix: str) -> dict:
    stat = os.stat(path)
    is_dir = os.path.isdir(path)
    return {"pathSuffix": suffix, "type": "DIRECTORY" if is_dir else "FILE", "length": 0 if is_dir else stat.st_size,
            "owner": "hdfs", "group": "supergroup", "permission": "755" if is_dir else "644",
            "accessTime": 0, "modificationTime": stat.st_mtime_ns // 1_000_000, "blockSize": 134217728,
            "replication": 0 if is_dir else 3, "fileId": stat.st_ino,
            "childrenNum": len(os.listdir(path)) if is_dir else 0, "storagePolicy": 0}


class WebHdfsHandler(StandinHandler):
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        if not url.path.startswith(PREFIX):
            return self._remote_error(404, "IllegalArgumentException", f"not a WebHDFS path: {url.path}")
        hdfs_path = unquote(url.path[len(PREFIX):]) or "/"
        local = os.path.join(self.server.root, hdfs_path.lstrip("/"))
        operation = params.get("op", "").upper()
        if params.get("datanode") == "true":
            operation = "DATANODE_READ"
        fault = self.take_fault(operation, hdfs_path)
        if fault is not None and fault.action == "500":
            return self._remote_error(500, "RetriableException", "injected server error")
        self.server.record(operation, hdfs_path)
        user = params.get("user.name", "")
        if user not in self.server.users:
            return self._remote_error(403, "AccessControlException",
                                      f"Permission denied: user={user}, access=READ_EXECUTE, inode=\"{hdfs_path}\"")
        if not os.path.exists(local):
            return self._remote_error(404, "FileNotFoundException", f"File {hdfs_path} does not exist.")
        if operation == "LISTSTATUS":
            if os.path.isdir(local):
                statuses = [_status(os.path.join(local, n), n) for n in sorted(os.listdir(local))]
            else:
                statuses = [_status(local, "")]
            return self._json({"FileStatuses": {"FileStatus": statuses}}, fault)
        if operation == "GETFILESTATUS":
            return self._json({"FileStatus": _status(local, "")}, fault)
        if operation == "OPEN":
            if os.path.isdir(local):
                return self._remote_error(404, "FileNotFoundException", f"Path is not a file: {hdfs_path}")
            location = (f"http://{self.server.address}{PREFIX}{quote(hdfs_path)}?" +
                        urlencode({**params, "datanode": "true"}))
            return self.send_body(307, [("Location", location), ("Content-Type", "application/octet-stream")], b"")
        if operation == "DATANODE_READ":
            with open(local, "rb") as f:
                f.seek(int(params.get("offset", 0)))
                length = params.get("length")
                data = f.read(int(length) if length else -1)
            return self.send_body(200, [("Content-Type", "application/octet-stream")], data, fault)
        self._remote_error(400, "IllegalArgumentException", f"Invalid value for webhdfs parameter \"op\": {operation}")

    def _json(self, document: dict, fault) -> None:
        self.send_body(200, [("Content-Type", "application/json")], json.dumps(document).encode(), fault)

    def _remote_error(self, status: int, exception: str, message: str) -> None:
        self.server.record("error", exception)
        body = json.dumps({"RemoteException": {"exception": exception, "message": message,
                                               "javaClassName": f"org.apache.hadoop.{exception}"}}).encode()
        self.send_body(status, [("Content-Type", "application/json")], body)


class WebHdfsStandin(StandinServer):
    def __init__(self, root: str, users: Iterable[str] = ("serving",)):
        super().__init__(WebHdfsHandler, root)
        self.users = set(users)

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def upload_tree(self, local_dir: str, hdfs_dir: str, only: Optional[tuple] = None) -> None:
        """Copies a local directory in, each file appearing whole (as a closed HDFS file does)."""
        for parent, _, names in os.walk(local_dir):
            for name in sorted(names):
                if only is None or any(part in name for part in only):
                    source = os.path.join(parent, name)
                    target = os.path.join(self.root, hdfs_dir.lstrip("/"), os.path.relpath(source, local_dir))
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with tempfile.NamedTemporaryFile(dir=self.root, prefix=".upload-", delete=False) as f:
                        shutil.copyfileobj(open(source, "rb"), f)
                    os.replace(f.name, target)
