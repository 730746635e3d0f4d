"""examples/go_host (cgo) and examples/java_host (JNA): HTTP servers in Go and Java that dlopen() the
library and call process() from many threads, built with Debian's Go and JDK and driven over HTTP."""
from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from host_processes import HostProcess, outputs_of, serve_through_swaps
from lifecycle_helpers import serialize
from processor import predict_pb2

ROOT = Path(__file__).resolve().parents[1]
JNA = Path("/usr/share/java/jna.jar")


def build_go(out: Path) -> list:
    if not shutil.which("go"):
        pytest.skip("cannot build the Go host without go (apt-get install golang-go; .ci/run installs it)")
    env = dict(os.environ)
    if "HOME" not in env and "GOCACHE" not in env:
        env["GOCACHE"] = str(out / "go-cache")
    subprocess.run(["make", "-s", "-C", str(ROOT / "examples" / "go_host"), f"OUT={out}"], check=True, env=env)
    return [str(out / "go_host")]


def build_java(out: Path) -> list:
    missing = [what for what, present in (("javac", shutil.which("javac")), ("java", shutil.which("java")),
                                          (str(JNA), JNA.exists())) if not present]
    if missing:
        pytest.skip(f"cannot build the Java host without {', '.join(missing)} "
                    "(apt-get install openjdk-17-jdk-headless libjna-java; .ci/run installs them)")
    subprocess.run(["make", "-s", "-C", str(ROOT / "examples" / "java_host"), f"OUT={out}", f"JNA={JNA}"], check=True)
    return [shutil.which("java"), "-cp", f"{JNA}:{out}", "JavaHost"]


BUILDERS = {"go": build_go, "java": build_java}


@pytest.fixture(scope="module")
def commands() -> dict:
    """language -> the command that runs its host, built on first use."""
    return {}


class HttpHost(HostProcess):
    """A running Go or Java host; one keep-alive HTTP connection per client thread."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections = threading.local()

    def call(self, method: str, path: str, body: bytes = b"") -> tuple:
        connection = getattr(self.connections, "connection", None)
        if connection is None:
            connection = self.connections.connection = http.client.HTTPConnection(self.address, timeout=30)
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.read()

    def predict(self, request: bytes) -> bytes:
        status, body = self.call("POST", "/predict", request)
        if status != 200:
            raise AssertionError(f"HTTP {status}: {body[:300]!r}")
        return body

    def model_path(self) -> str:
        status, body = self.call("GET", "/model_info")
        assert status == 200, body
        return predict_pb2.ServingModelInfo.FromString(body).model_path


@pytest.fixture
def serve(commands, tmp_path_factory, tmp_path):
    hosts = []

    def start(language: str, config: dict) -> HttpHost:
        if language not in commands:
            commands[language] = BUILDERS[language](tmp_path_factory.mktemp(f"{language}_host"))
        host = HttpHost(commands[language], config, tmp_path, ("--threads", "8") if language == "java" else ())
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        host.kill()


@pytest.mark.parametrize("language", ["go", "java"])
def test_host_serves_like_tensorflow_answers_errors_and_stops_on_sigterm(serve, language, rec_model, reference,
                                                                           batch):
    host = serve(language, rec_model.config())
    newest = rec_model.prefixes()[-1]
    served = outputs_of(host.predict(serialize(batch)))
    for name, value in reference.predict(newest, batch).items():
        np.testing.assert_allclose(served[name], value, atol=1e-5)
    assert host.model_path() == newest

    unknown = predict_pb2.PredictRequest()
    unknown.inputs["nope"].dtype = predict_pb2.DT_FLOAT
    assert host.call("POST", "/predict", unknown.SerializeToString()) == (
        400, b"unknown input 'nope'; the signature's inputs are 'category', 'dense', 'item_id', 'user_id'")
    status, message = host.call("POST", "/predict", b"\xff\xfe\xfd")
    assert status == 400 and message.startswith(b"the request is not a valid PredictRequest"), message
    status, message = host.call("GET", "/predict")
    assert status == 405
    # the model keeps serving after the errors
    np.testing.assert_allclose(outputs_of(host.predict(serialize(batch)))["prob"], served["prob"])

    code, seconds, rest = host.stop()
    assert code == 0 and "stopped" in rest, host.stderr()[-3000:]
    assert seconds < 10
    assert "(RTLD_DEEPBIND: isolated from the host's libraries)" in host.stderr()
    assert "processor closed" in host.stderr()


@pytest.mark.parametrize("language", ["go", "java"])
def test_host_under_load_while_versions_swap(serve, language, rec_model, reference, batch, tmp_path):
    model = rec_model.copy(tmp_path / "model")
    host = serve(language, model.config(poll_interval_seconds=0.1))
    serve_through_swaps(model, reference, batch, host.predict, host.model_path)
    code, seconds, rest = host.stop()
    assert code == 0 and "stopped" in rest, host.stderr()[-3000:]
