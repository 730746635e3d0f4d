"""Real redis-server processes on loopback for the feature-store tests: one server, or a cluster of
three masters (with replicas, if asked) made with redis-cli --cluster create. Skips (saying why) when redis-server is missing."""
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
    def __init__(self, directory: Path, password: str = "", cluster: bool = False, node_timeout_ms: int = 15000):
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
            self.args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf",
                          "--cluster-node-timeout", str(node_timeout_ms)]
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
    """Three masters (and `replicas` replicas of each), made with redis-cli --cluster create."""

    def __init__(self, directory: Path, replicas: int = 0, node_timeout_ms: int = 15000):
        self.servers: List[RedisServer] = [RedisServer(directory / str(i), cluster=True, node_timeout_ms=node_timeout_ms)
                                           for i in range(3 * (1 + replicas))]
        subprocess.run(["redis-cli", "--cluster", "create", *[s.address for s in self.servers],
                        "--cluster-replicas", str(replicas), "--cluster-yes"], check=True, capture_output=True,
                       timeout=60)
        for _ in range(400):
            if self.healthy(self.servers) and (not replicas or self._replicas_synced()):
                return
            time.sleep(0.05)
        raise RuntimeError("the cluster did not become ready")

    @staticmethod
    def healthy(servers) -> bool:
        """Whether every one of `servers` says the cluster is ok (all slots served)."""
        return all(b"cluster_state:ok" in subprocess.run(["redis-cli", "-p", str(s.port), "cluster", "info"],
                                                         capture_output=True).stdout for s in servers)

    @staticmethod
    def failed_over(victim: RedisServer, survivors) -> bool:
        """Whether every survivor's slot map has another master where `victim` was."""
        for server in survivors:
            try:
                slots = redis.Redis(port=server.port).execute_command("CLUSTER SLOTS")
            except redis.RedisError:
                return False
            if any(int(r[2][1]) == victim.port for r in slots):
                return False
        return True

    def _replicas_synced(self) -> bool:
        return all(redis.Redis(port=s.port).info("replication").get("master_link_status", "up") == "up"
                   for s in self.servers)

    def masters(self) -> List[RedisServer]:
        return [s for s in self.servers if redis.Redis(port=s.port).info("replication")["role"] == "master"]

    @property
    def url(self) -> str:
        return ",".join(s.address for s in self.servers)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
