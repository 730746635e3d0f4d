"""Real redis-server processes on loopback for the feature-store tests: one server, or a cluster of
three masters made with redis-cli --cluster create. Skips (saying why) when redis-server is missing."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import List

import pytest
import redis


def free_port(with_cluster_bus: bool = False) -> int:
    """A free loopback port; for a cluster node also its bus port (+10000), which must stay <= 65535."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not with_cluster_bus:
            return port
        if port + 10000 <= 65535:
            try:
                with socket.socket() as bus:
                    bus.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                pass


class RedisServer:
    def __init__(self, directory: Path, password: str = "", cluster: bool = False):
        if not shutil.which("redis-server"):
            pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
        self.port = free_port(with_cluster_bus=cluster)
        self.password = password
        directory.mkdir(parents=True, exist_ok=True)
        self.args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                     "--dir", str(directory)]
        if password:
            self.args += ["--requirepass", password, "--masterauth", password]
        if cluster:
            self.args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf"]
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def shutdown_saving(self) -> None:
        """Stops the server after writing its data to disk: start() brings it back with the data."""
        try:
            redis.Redis(port=self.port, password=self.password or None).shutdown(save=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        self.process.wait(timeout=30)


class RedisClusterOfThree:
    def __init__(self, directory: Path):
        self.servers: List[RedisServer] = [RedisServer(directory / str(i), cluster=True) for i in range(3)]
        subprocess.run(["redis-cli", "--cluster", "create", *[s.address for s in self.servers],
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        for _ in range(200):
            if all(b"cluster_state:ok" in subprocess.run(["redis-cli", "-p", str(s.port), "cluster", "info"],
                                                         capture_output=True).stdout for s in self.servers):
                return
            time.sleep(0.05)
        raise RuntimeError("the cluster did not become ready")

    @property
    def url(self) -> str:
        return ",".join(s.address for s in self.servers)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
