"""What the protocol stand-ins for remote stores share: a threaded HTTP server on loopback serving a
directory of real files, a log of the requests it answered, and injectable faults.

No OSS or HDFS service can run on this machine, so the real clients (oss2, fsspec's WebHDFS) are
tested against stand-ins that speak their protocols on 127.0.0.1.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, List, Optional, Tuple


@dataclass
class Fault:
    operation: str            # "list", "get", ... as the stand-in names its operations
    path_part: str            # applies to requests whose path contains this
    times: int                # how many requests it hits
    action: str               # "500": a server error; "reset": the connection drops before an answer;
                              # "truncate": three quarters of the body, then the connection drops; "call": run `call`
    call: Optional[Callable[[], None]] = None


class StandinHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "StandinServer"

    def log_message(self, *args) -> None:  # quiet: the request log is in server.requests
        pass

    def take_fault(self, operation: str, path: str) -> Optional[Fault]:
        return self.server.take_fault(operation, path)

    def send_body(self, status: int, headers: List[Tuple[str, str]], body: bytes, fault: Optional[Fault] = None,
                  head_only: bool = False) -> None:
        if fault is not None and fault.action == "reset":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if fault is not None and fault.action == "truncate":
            self.send_header("Connection", "close")
        self.end_headers()
        if head_only:
            return
        if fault is not None and fault.action == "truncate":
            self.wfile.write(body[: len(body) * 3 // 4])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


class StandinServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type, root: str):
        super().__init__(("127.0.0.1", 0), handler)
        self.root = root
        self.requests: List[Tuple[str, str]] = []  # (operation, path) answered, in order
        self._faults: List[Fault] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def start(self) -> "StandinServer":
        os.makedirs(self.root, exist_ok=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def inject(self, operation: str, path_part: str, action: str, times: int = 1,
               call: Optional[Callable[[], None]] = None) -> None:
        with self._lock:
            self._faults.append(Fault(operation, path_part, times, action, call))

    def count(self, operation: str) -> int:
        with self._lock:
            return sum(1 for op, _ in self.requests if op == operation)

    def record(self, operation: str, path: str) -> None:
        with self._lock:
            self.requests.append((operation, path))

    def take_fault(self, operation: str, path: str) -> Optional[Fault]:
        with self._lock:
            for fault in self._faults:
                if fault.operation == operation and fault.path_part in path and fault.times > 0:
                    fault.times -= 1
                    break
            else:
                return None
        if fault.action == "call":
            fault.call()
            return None
        return fault
