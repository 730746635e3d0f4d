"""examples/grpc_host: a C++ gRPC server on Debian's gRPC and protobuf that dlopen()s the library with
plain flags, built with the system malloc and with jemalloc, driven by a real gRPC client (grpcio)."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import processor
from lifecycle_helpers import serialize
from processor import predict_pb2, tensors

grpc = pytest.importorskip("grpc", reason="grpcio is not installed (requirements.txt lists it)")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "grpc_host"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory) -> dict:
    missing = [t for t in ("protoc", "grpc_cpp_plugin", "pkg-config", "g++") if not shutil.which(t)]
    if not missing and subprocess.run(["pkg-config", "--exists", "grpc++", "protobuf"]).returncode != 0:
        missing.append("libgrpc++-dev")
    if missing:
        pytest.skip(f"cannot build the gRPC host without {', '.join(missing)} (.ci/run installs them)")
    out = tmp_path_factory.mktemp("grpc_host")
    jemalloc = any(Path("/usr/lib").glob("*/libjemalloc.so"))
    subprocess.run(["make", "-s", "-j2", "-C", str(EXAMPLE), f"OUT={out}", f"PROCESSOR_INCLUDE={processor.include_dir()}",
                    "jemalloc" if jemalloc else "all"], check=True)
    built = {"system": str(out / "grpc_host")}
    if jemalloc:
        built["jemalloc"] = str(out / "grpc_host-jemalloc")
    return built


class Server:
    """A running grpc_host (under env -i) and a channel to it."""

    def __init__(self, binary: str, config: dict, tmp_path: Path, threads: int = 8):
        config_path = tmp_path / "config.json"
        config_path.write_text(json.dumps(config))
        self.log = open(tmp_path / "grpc_host.stderr", "w+")
        self.process = subprocess.Popen(["env", "-i", binary, processor.library_path(), str(config_path), "--address",
                                         "127.0.0.1:0", "--threads", str(threads)],
                                        stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.process.stdout.readline()
        match = re.match(r"listening on (127\.0\.0\.1:\d+)", line)
        assert match, f"the host did not start: {line!r} {self.stderr()}"
        self.channel = grpc.insecure_channel(match.group(1))
        self.predict = self.channel.unary_unary("/processor.Processor/Predict")
        self.model_info = self.channel.unary_unary("/processor.Processor/GetModelInfo")

    def stderr(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, timeout: float = 30.0):
        """SIGTERM; returns (exit code, seconds to exit, the rest of stdout)."""
        self.channel.close()
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        rest, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode, time.monotonic() - started, rest

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def serve(hosts, tmp_path):
    servers = []

    def start(variant: str, config: dict, **options) -> Server:
        if variant not in hosts:
            pytest.skip(f"no {variant} build of the gRPC host (libjemalloc-dev is not installed)")
        server = Server(hosts[variant], config, tmp_path, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


def outputs_of(response_bytes: bytes) -> dict:
    response = predict_pb2.PredictResponse.FromString(response_bytes)
    return {name: tensors.from_array_proto(array) for name, array in response.outputs.items()}


def test_grpc_host_serves_like_tensorflow_maps_errors_and_stops_on_sigterm(serve, rec_model, reference, batch):
    server = serve("system", rec_model.config())
    newest = rec_model.prefixes()[-1]
    served = outputs_of(server.predict(serialize(batch), timeout=30))
    for name, value in reference.predict(newest, batch).items():
        np.testing.assert_allclose(served[name], value, atol=1e-5)

    info = predict_pb2.ServingModelInfo.FromString(server.model_info(b"", timeout=30))
    assert info.model_path == newest and info.version_step == int(newest.split("-")[-1])

    unknown = predict_pb2.PredictRequest()
    unknown.inputs["nope"].dtype = predict_pb2.DT_FLOAT
    with pytest.raises(grpc.RpcError) as error:
        server.predict(unknown.SerializeToString(), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == ("unknown input 'nope'; the signature's inputs are 'category', 'dense', "
                                     "'item_id', 'user_id'")
    filtered = predict_pb2.PredictRequest.FromString(serialize(batch))
    filtered.output_filter.append("no_such_output")
    with pytest.raises(grpc.RpcError) as error:
        server.predict(filtered.SerializeToString(), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown output 'no_such_output' in output_filter" in error.value.details()
    # bytes the host's own protobuf cannot parse never reach the library
    with pytest.raises(grpc.RpcError) as error:
        server.predict(b"\xff\xfe\xfd", timeout=30)
    assert error.value.code() == grpc.StatusCode.INTERNAL
    # the model keeps serving after the errors
    np.testing.assert_allclose(outputs_of(server.predict(serialize(batch), timeout=30))["prob"], served["prob"])

    code, seconds, rest = server.stop()
    assert code == 0 and "stopped" in rest, server.stderr()[-3000:]
    assert seconds < 10
    assert "processor closed" in server.stderr()


@pytest.mark.parametrize("variant", ["system", "jemalloc"])
def test_grpc_host_under_load_while_versions_swap(serve, variant, rec_model, reference, batch, tmp_path):
    model = rec_model.copy(tmp_path / "model")
    server = serve(variant, model.config(poll_interval_seconds=0.1), threads=8)
    request = serialize(batch)
    expected = {model.prefixes()[-1]: reference.predict(model.prefixes()[-1], batch)}
    answers, failures, counts = set(), [], []
    stop = threading.Event()

    def client():
        count = 0
        while not stop.is_set():
            try:
                answers.add(server.predict(request, timeout=30))
                count += 1
            except grpc.RpcError as e:
                failures.append(f"{e.code()}: {e.details()}")
        counts.append(count)

    clients = [threading.Thread(target=client) for _ in range(4)]
    for c in clients:
        c.start()
    try:
        for seed in range(3):
            time.sleep(0.8)
            model.trainer.train(3, seed=200 + seed)
            prefix = model.trainer.save_checkpoint(model.checkpoint_dir)
            expected[prefix] = reference.predict(prefix, batch)
        newest = model.prefixes()[-1]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = predict_pb2.ServingModelInfo.FromString(server.model_info(b"", timeout=30))
            if info.model_path == newest:
                break
            time.sleep(0.1)
        time.sleep(0.5)  # answers from the newest version
    finally:
        stop.set()
        for c in clients:
            c.join()
    assert failures == []
    assert sum(counts) > 50 and all(counts), counts
    seen = set()
    for answer in answers:
        served = outputs_of(answer)
        matching = [p for p, outputs in expected.items()
                    if all(np.allclose(served[name], value, atol=1e-5) for name, value in outputs.items())]
        assert matching, "an answer equals no version's TensorFlow outputs"
        seen.update(matching)
    assert newest in seen and len(seen) >= 2
    code, seconds, rest = server.stop()
    assert code == 0 and "stopped" in rest
