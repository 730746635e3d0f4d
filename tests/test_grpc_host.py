"""examples/grpc_host: a C++ gRPC server on Debian's gRPC and protobuf that dlopen()s the library with
plain flags, built with the system malloc and with jemalloc, driven by a real gRPC client (grpcio)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import processor
from host_processes import HostProcess, outputs_of, serve_through_swaps
from lifecycle_helpers import serialize
from processor import predict_pb2

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
                    "jemalloc" if jemalloc else "all", "load"], check=True)
    built = {"system": str(out / "grpc_host"), "load": str(out / "grpc_load")}
    if jemalloc:
        built["jemalloc"] = str(out / "grpc_host-jemalloc")
    return built


class Server(HostProcess):
    """A running grpc_host and a channel to it."""

    def __init__(self, binary: str, config: dict, tmp_path: Path, threads: int = 8):
        super().__init__([binary], config, tmp_path, ("--threads", str(threads)))
        self.channel = grpc.insecure_channel(self.address)
        self.predict = self.channel.unary_unary("/processor.Processor/Predict")
        self.model_info = self.channel.unary_unary("/processor.Processor/GetModelInfo")
        self.metrics = self.channel.unary_unary("/processor.Processor/GetMetrics")

    def stop(self, timeout: float = 30.0):
        self.channel.close()
        return super().stop(timeout)


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
    # the library's metrics through GetMetrics (a Metrics message: field 1, the Prometheus text)
    metrics = server.metrics(b"", timeout=30)
    assert metrics[0] == 0x0A
    text = metrics.decode(errors="replace")
    assert ':tensorflow:serving:request_count{model_name="default",status="OK"} 2\n' in text
    assert ':tensorflow:serving:request_count{model_name="default",status="INVALID_ARGUMENT"} 2\n' in text

    code, seconds, rest = server.stop()
    assert code == 0 and "stopped" in rest, server.stderr()[-3000:]
    assert seconds < 10
    assert "processor closed" in server.stderr()


def test_grpc_load_reports_the_hosts_rate_latency_and_the_librarys_own_time(hosts, serve, rec_model, batch, tmp_path):
    server = serve("system", rec_model.config())
    request = tmp_path / "request.bin"
    request.write_bytes(serialize(batch))
    out = subprocess.run([hosts["load"], server.address, str(request), "1", "2"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    bench, library = out.stdout.splitlines()
    match = re.fullmatch(r"bench: (\d+) requests in ([\d.]+) s on 2 connection\(s\): (\d+) requests/s, "
                         r"p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms, 0 errors", bench)
    assert match, bench
    count, p50, p99, worst = int(match[1]), float(match[4]), float(match[5]), float(match[6])
    assert count > 10 and 0 < p50 <= p99 <= worst
    match = re.fullmatch(r"library: mean ([\d.]+) ms over (\d+) requests", library)
    assert match and int(match[2]) == count and 0 < float(match[1]) < worst, library
    info = subprocess.run([hosts["load"], server.address, str(request), "0.5", "1", "--model-info"],
                          capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and "library:" not in info.stdout and ", 0 errors" in info.stdout, info.stdout
    # Echo: the request back without the library (the transport's floor, benchmarks/grpc_floor.py)
    echoed = server.channel.unary_unary("/processor.Processor/Echo")(serialize(batch), timeout=30)
    assert predict_pb2.PredictRequest.FromString(echoed) == predict_pb2.PredictRequest.FromString(serialize(batch))
    echo = subprocess.run([hosts["load"], server.address, str(request), "0.5", "1", "--echo"],
                          capture_output=True, text=True, timeout=60)
    assert echo.returncode == 0 and "library:" not in echo.stdout and ", 0 errors" in echo.stdout, echo.stdout
    # a request the library rejects is counted as an error, with the library's message, and fails the run
    unknown = predict_pb2.PredictRequest()
    unknown.inputs["nope"].dtype = predict_pb2.DT_FLOAT
    request.write_bytes(unknown.SerializeToString())
    failed = subprocess.run([hosts["load"], server.address, str(request), "0.3", "1"], capture_output=True, text=True,
                            timeout=60)
    assert failed.returncode == 1 and "bench: no request answered OK" in failed.stdout
    assert "grpc_load: 3: unknown input 'nope'" in failed.stderr


@pytest.mark.parametrize("variant", ["system", "jemalloc"])
def test_grpc_host_under_load_while_versions_swap(serve, variant, rec_model, reference, batch, tmp_path):
    model = rec_model.copy(tmp_path / "model")
    server = serve(variant, model.config(poll_interval_seconds=0.1), threads=8)

    def model_path() -> str:
        return predict_pb2.ServingModelInfo.FromString(server.model_info(b"", timeout=30)).model_path

    serve_through_swaps(model, reference, batch, lambda request: server.predict(request, timeout=30), model_path)
    code, seconds, rest = server.stop()
    assert code == 0 and "stopped" in rest
