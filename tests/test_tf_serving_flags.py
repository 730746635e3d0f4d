"""tensorflow_model_server's flags beyond the model config (tensorflow_serving/model_servers/main.cc):
TLS from its SSLConfig file (a certificate authority and certificates made by the openssl CLI, a
client with grpcio's SSL credentials), --grpc_channel_arguments, --grpc_socket_path,
--rest_api_timeout_in_ms, the warmup and session flags, and the flags not served here (an error
naming each, never silently ignored)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from model_builders import build_counting_model
from test_rest_server import Server

tf = pytest.importorskip("tensorflow")
grpc = pytest.importorskip("grpc")
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from processor.server.grpc_api import grpc_available  # noqa: E402

if grpc_available():
    pytest.skip(grpc_available(), allow_module_level=True)


@pytest.fixture(scope="module")
def counter(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("flags") / "counter"
    build_counting_model(str(base / "1"), 10)
    return base


def count_request(n: int) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "counter"
    request.inputs["n"].CopyFrom(tf.make_tensor_proto(np.int64(n)))
    return request


def count(channel, n: int = 3) -> int:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return int(tf.make_ndarray(stub.Predict(count_request(n), timeout=30).outputs["count"]))


def serve(work: Path, base: Path, *flags) -> Server:
    return Server(None, work, "counter", ("--model_name", "counter", "--model_base_path", str(base), *flags), grpc=True)


def make_certificates(where: Path) -> dict:
    """A certificate authority and a server certificate for 127.0.0.1 and localhost it signs, and a client
    certificate it signs, made by the openssl CLI; PEM text by name."""
    if not shutil.which("openssl"):
        pytest.skip("no openssl CLI to make certificates with (Debian: openssl)")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)
    for ca in ("ca", "other_ca"):  # the one that signs, and one that signs nothing here
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                "-days", "2", "-subj", f"/CN=processor test {ca}")
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, subject in (("server", "/CN=localhost"), ("client", "/CN=client")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", *(["-extfile", "san.ext"] if name == "server" else []))
    return {name: (where / name).read_text() for name in ("ca.pem", "other_ca.pem", "server.key", "server.pem",
                                                           "client.key", "client.pem")}


def ssl_config_text(pem: dict, client_verify: bool) -> str:
    """TF Serving's SSLConfig (tensorflow_serving/config/ssl_config.proto) in text format: PEM inline."""
    def quoted(text):
        return '"' + text.replace("\n", "\\n") + '"'
    return (f"server_key: {quoted(pem['server.key'])}\nserver_cert: {quoted(pem['server.pem'])}\n"
            f"custom_ca: {quoted(pem['ca.pem'])}\nclient_verify: {'true' if client_verify else 'false'}\n")


@pytest.mark.parametrize("client_verify", [False, True], ids=["server-auth", "mutual"])
def test_ssl_config_file_serves_grpc_over_tls(counter, tmp_path, client_verify):
    pem = make_certificates(tmp_path)
    (tmp_path / "ssl.config").write_text(ssl_config_text(pem, client_verify))
    server = serve(tmp_path, counter, "--ssl_config_file", str(tmp_path / "ssl.config"))
    address = f"localhost:{server.grpc_port}"
    try:
        client_pair = dict(private_key=pem["client.key"].encode(), certificate_chain=pem["client.pem"].encode())
        trusted = grpc.ssl_channel_credentials(root_certificates=pem["ca.pem"].encode(), **client_pair)
        with grpc.secure_channel(address, trusted) as channel:
            assert count(channel, 7) == 7
        # A client that does not trust the authority, a plaintext client, and with client_verify a
        # client without a certificate are all refused.
        refused = [grpc.secure_channel(address, grpc.ssl_channel_credentials(
                       root_certificates=pem["other_ca.pem"].encode())), grpc.insecure_channel(address)]
        if client_verify:
            refused.append(grpc.secure_channel(address, grpc.ssl_channel_credentials(
                root_certificates=pem["ca.pem"].encode())))
        for channel in refused:
            with channel, pytest.raises(grpc.RpcError) as raised:
                count(channel)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert server.stop() == 0
    assert pem["server.key"].splitlines()[1] not in (tmp_path / "server.log").read_text()  # the key is never logged


def test_grpc_channel_arguments_reach_the_server(counter, tmp_path):
    """grpc.max_send_message_length=20: a reply larger than 20 bytes is refused by the server's own
    gRPC, which shows the argument reached it (TF Serving's parse: integers as integers)."""
    server = serve(tmp_path, counter, "--grpc_channel_arguments",
                   "grpc.max_send_message_length=20,grpc.primary_user_agent=processor-test")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            with pytest.raises(grpc.RpcError) as raised:
                count(channel)
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        assert server.stop() == 0


def test_grpc_socket_path_serves_on_a_unix_socket_too(counter, tmp_path):
    socket_path = tmp_path / "tfs.sock"
    server = serve(tmp_path, counter, "--grpc_socket_path", str(socket_path))
    try:
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            assert count(channel, 5) == 5
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            assert count(channel, 4) == 4
    finally:
        assert server.stop() == 0


def test_rest_api_timeout_answers_504_and_the_server_keeps_serving(counter, tmp_path):
    server = serve(tmp_path, counter, "--rest_api_timeout_in_ms", "300")
    try:
        url = f"{server.url}/v1/models/counter:predict"
        slow = requests.post(url, json={"inputs": {"n": 1_000_000}}, timeout=120)  # some 3 s of counting
        assert (slow.status_code, slow.json()) == (504, {
            "error": "Deadline exceeded: the request took longer than --rest_api_timeout_in_ms (300 ms)"})
        quick = requests.post(url, json={"inputs": {"n": 3}}, timeout=120)
        assert (quick.status_code, quick.json()["outputs"]["count"]) == (200, 3)
    finally:
        assert server.stop() == 0


def test_model_flags_become_the_config_every_model_loads_with(counter):
    from processor.hosts.cli import build_parser, serve_options
    args = build_parser().parse_args([
        "serve", "--model_base_path", str(counter), "--enable_model_warmup=false",
        "--num_request_iterations_for_warmup", "3", "--saved_model_tags", "serve,gpu",
        "--tensorflow_session_parallelism", "4", "--tensorflow_intra_op_parallelism", "2",
        "--rest_api_num_threads", "6", "--grpc_max_threads", "5", "--grpc_channel_arguments", "a=1,b=x,c=99999999999"])
    options = serve_options(args)
    assert {k: options.base[k] for k in ("enable_model_warmup", "warmup_iterations", "saved_model_tags",
                                          "intra_op_parallelism_threads", "inter_op_parallelism_threads")} == {
        "enable_model_warmup": False, "warmup_iterations": 3, "saved_model_tags": "serve,gpu",
        "intra_op_parallelism_threads": 2, "inter_op_parallelism_threads": 4}
    assert (options.rest_threads, options.grpc_threads, options.rest_timeout_ms) == (6, 5, 30000)
    assert options.grpc_channel_arguments == [("a", 1), ("b", "x"), ("c", "99999999999")]


@pytest.mark.parametrize("flags, message", [
    (("--max_num_load_retries=3",), "--max_num_load_retries is a tensorflow_model_server flag not served here: a "
                                    "version that fails to load is retried with backoff"),
    (("--per_process_gpu_memory_fraction", "0.5"), "--per_process_gpu_memory_fraction is a tensorflow_model_server "
                                                   "flag not served here: this build serves on CPU"),
    (("--enable_model_warmup=maybe",), "argument --enable_model_warmup: 'maybe' is not true or false"),
    (("--grpc_channel_arguments", "novalue"), "'grpc_channel_arguments': 'novalue' is not key=value"),
    (("--port", "9000", "--rest_api_port", "9000"), "'rest_api_port': must differ from --port"),
])
def test_unserved_and_malformed_flags_stop_the_server_with_a_reason(counter, flags, message):
    run = subprocess.run([sys.executable, "-m", "processor", "serve", "--model_base_path", str(counter), *flags],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert message in run.stderr


def test_version_flag():
    run = subprocess.run([sys.executable, "-m", "processor", "serve", "--version"], capture_output=True, text=True,
                         timeout=120)
    import processor
    assert (run.returncode, run.stdout.split()[:2]) == (0, ["Processor", processor.__version__])


def test_ssl_config_file_errors_never_quote_the_key(tmp_path):
    from processor.errors import ConfigError
    from processor.formats.tf_serving import parse_ssl_config
    with pytest.raises(ConfigError) as raised:
        parse_ssl_config('server_key: -----BEGIN PRIVATE KEY-----SECRETBYTES', "ssl.config")
    assert "SECRETBYTES" not in str(raised.value) and "not an SSLConfig in text format" in str(raised.value)
    with pytest.raises(ConfigError, match="server_key and server_cert are required"):
        parse_ssl_config('server_key: "k"', "ssl.config")
    config = parse_ssl_config('server_key: "SECRETKEY" server_cert: "c"', "ssl.config")
    assert "SECRETKEY" not in repr(config)


def test_the_docs_name_every_unserved_flag():
    from processor.hosts.cli import UNSERVED_TF_SERVING_FLAGS
    text = (Path(__file__).resolve().parents[1] / "docs" / "tf_serving.md").read_text()
    assert [flag for flag in UNSERVED_TF_SERVING_FLAGS if f"`--{flag}`" not in text] == []
