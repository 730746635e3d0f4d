"""The TF Serving-compatible REST host: `python -m processor serve` in its own process, real HTTP
requests, answers compared with TensorFlow's."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from lifecycle_helpers import json_rows
from prometheus_client.parser import text_string_to_metric_families
from redis_servers import free_port

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("item_vector", "logits", "prob")


class Server:
    """`python -m processor serve` with `config` (None: `flags` say what to serve, as TF Serving's do);
    with `grpc`, TF Serving's gRPC API too, on `grpc_port`."""

    def __init__(self, config, work: Path, model_name: str = "rec", flags: tuple = (), grpc: bool = False):
        self.port = free_port()
        self.grpc_port = free_port() if grpc else 0
        self.url = f"http://127.0.0.1:{self.port}"
        self.model_name = model_name
        if config is not None:
            config_path = work / "rest_config.json"
            config_path.write_text(json.dumps(config))
            flags = ("--config", str(config_path), "--model-name", model_name, *flags)
        self.log = open(work / "server.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "processor", "serve", "--rest_api_port", str(self.port), "--port", str(self.grpc_port),
             *flags], stdout=self.log,
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (work / "server.log").read_text()[-3000:]
            try:
                if requests.get(f"{self.url}/v1/models/{model_name}", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("the server did not come up")

    def predict(self, body, path: str = "") -> requests.Response:
        return requests.post(f"{self.url}/v1/models/{self.model_name}{path}:predict",
                             data=body if isinstance(body, (bytes, str)) else json.dumps(body), timeout=30)

    def stop(self) -> int:
        self.process.terminate()
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:  # never left running: it would load the machine for later tests
            self.process.kill()
            self.process.wait()
            raise
        finally:
            self.log.close()
        return code


@pytest.fixture(scope="module")
def server(rec_model, tmp_path_factory):
    work = tmp_path_factory.mktemp("rest")
    model = rec_model.copy(work)
    running = Server(model.config(poll_interval_seconds=0.2), work)
    running.model = model
    yield running
    assert running.stop() == 0  # SIGTERM: a clean shutdown


def columns(batch: dict) -> dict:
    return {name: [v.decode() for v in value] if value.dtype == object else value.tolist()
            for name, value in batch.items()}


def test_row_format_predicts_like_tensorflow(server, reference, batch):
    answer = server.predict({"instances": json_rows(batch)})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    expected = reference.predict(server.model.prefixes()[-1], batch)
    assert len(predictions) == len(batch["user_id"]) and sorted(predictions[0]) == sorted(OUTPUTS)
    for name in OUTPUTS:
        np.testing.assert_allclose([p[name] for p in predictions], expected[name], atol=1e-5, err_msg=name)


def test_columnar_format_and_b64_bytes(server, reference, batch):
    body = {"signature_name": "serving_default", "inputs": columns(batch)}
    body["inputs"]["category"] = [{"b64": base64.b64encode(v).decode()} for v in batch["category"]]
    answer = server.predict(body)
    assert answer.status_code == 200, answer.text
    outputs = answer.json()["outputs"]
    expected = reference.predict(server.model.prefixes()[-1], batch)
    for name in OUTPUTS:
        np.testing.assert_allclose(outputs[name], expected[name], atol=1e-5, err_msg=name)


def test_model_status_metadata_and_metrics(server):
    step = str(int(server.model.prefixes()[-1].rsplit("-", 1)[1]))
    status = requests.get(f"{server.url}/v1/models/rec", timeout=10).json()
    assert status == {"model_version_status": [{"version": step, "state": "AVAILABLE",
                                                "status": {"error_code": "OK", "error_message": ""}}]}
    assert requests.get(f"{server.url}/v1/models/rec/versions/{step}", timeout=10).status_code == 200
    metadata = requests.get(f"{server.url}/v1/models/rec/metadata", timeout=10).json()
    assert metadata["model_spec"] == {"name": "rec", "signature_name": "", "version": step}
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["user_id"] == {"dtype": "DT_INT64", "name": "user_id:0", "tensor_shape": {
        "dim": [{"size": "-1", "name": ""}], "unknown_rank": False}}
    assert sorted(signature["outputs"]) == sorted(OUTPUTS)
    text = requests.get(f"{server.url}/monitoring/prometheus/metrics", timeout=10).text
    names = {family.name for family in text_string_to_metric_families(text)}
    assert ":tensorflow:serving:request_count" in names


def test_a_specific_version_is_served_only_when_it_is_the_serving_one(server, batch):
    step = int(server.model.prefixes()[-1].rsplit("-", 1)[1])
    assert server.predict({"instances": json_rows(batch)}, f"/versions/{step}").status_code == 200
    answer = server.predict({"instances": json_rows(batch)}, f"/versions/{step + 1}")
    assert answer.status_code == 404
    assert answer.json() == {"error": f"Servable not found for request: Specific(rec, {step + 1}); serving version {step}"}


@pytest.mark.parametrize("path,body,status,message", [
    ("/v1/models/other:predict", {"instances": [1]}, 404, "Servable not found for request: Latest(other)"),
    ("/v1/models/rec:predict", b"{not json", 400, "JSON Parse error"),
    ("/v1/models/rec:predict", {"instances": [{"user_id": 1}]}, 400, "missing input 'category'"),
    ("/v1/models/rec:predict", {"instances": [{"user_id": 1.5, "item_id": 1, "category": "a", "dense": [0, 0, 0, 0]}]},
     400, "input 'user_id': expects int64, got float64"),
    ("/v1/models/rec:predict", {"inputs": {"user_id": [1]}, "instances": []}, 400, "exactly one of 'instances'"),
    ("/v1/models/rec:predict", {"instances": [{"user_id": 1, "item_id": 1, "category": {"b64": "%%"},
                                               "dense": [0, 0, 0, 0]}]}, 400, "invalid base64"),
    ("/v1/models/rec:predict", {"instances": [1, 2]}, 400, "each instance must be an object naming them"),
    ("/v1/models/rec:predict", {"signature_name": "other", "inputs": [1, 2]}, 400,
     'Serving signature key "other" not found.'),
    ("/v1/models/rec:classify", {"examples": []}, 400,
     "Expected classification signature method_name to be tensorflow/serving/classify. Was: tensorflow/serving/predict"),
    ("/v1/models/rec:explain", {"instances": []}, 400, "'explain' is not supported: :predict, :classify and :regress are"),
    ("/v1/models/rec/labels/stable:predict", {"instances": [1]}, 400, "Unrecognized servable version label: stable"),
    ("/v1/models/other:predict", {"instances": [1]}, 404, "Servable not found for request: Latest(other)"),
    ("/v1/models/other/versions/3:predict", {"instances": [1]}, 404, "Servable not found for request: Specific(other, 3)"),
])
def test_errors_are_tf_serving_json_with_its_status_codes(server, path, body, status, message):
    answer = requests.post(server.url + path, data=body if isinstance(body, bytes) else json.dumps(body), timeout=10)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]


def test_load_with_and_without_a_version_swap_answers_everything(server, tmp_path):
    """The bounded loopback load test of benchmarks/rest_load.py, short: every request answered 200,
    including while new versions are swapped in."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rest_load.py"), "--url", server.url,
                             "--model-name", "rec", "--checkpoint-dir", server.model.checkpoint_dir,
                             "--seconds", "1.5", "--clients", "4", "--json"],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "examples"), str(ROOT / "tests")])})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for phase in ("steady", "swapping"):
        assert report[phase]["errors"] == 0 and report[phase]["requests"] > 50, report
    assert report["swapping"]["versions_swapped"] >= 1


def test_tf_servings_batching_flags_merge_concurrent_rest_requests(rec_model, reference, batch, tmp_path):
    """--enable_batching with TF Serving's --batching_parameters_file (its documented text format):
    twelve concurrent REST requests answer TensorFlow's outputs, all through the batching."""
    from concurrent.futures import ThreadPoolExecutor
    parameters = tmp_path / "batching.config"
    parameters.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 0 }\n"
                          "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 1 }\n")
    server = Server(rec_model.config(poll_interval_seconds=0), tmp_path, flags=(
        "--enable_batching", "--batching_parameters_file", str(parameters)))
    try:
        expected = reference.predict(rec_model.prefixes()[-1], batch)
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: server.predict({"instances": json_rows(batch)}), range(12)))
        for answer in answers:
            assert answer.status_code == 200, answer.text
            np.testing.assert_allclose([p["prob"] for p in answer.json()["predictions"]], expected["prob"], atol=1e-6)
        metrics = requests.get(f"{server.url}/monitoring/prometheus/metrics", timeout=30).text
        assert ':processor:batch_queuing_delay_microseconds_count{model_name="rec"} 12' in metrics, metrics
    finally:
        assert server.stop() == 0


def test_tf_servings_model_flags_serve_the_newest_numbered_version(tmp_path):
    """--model_name and --model_base_path over a base path of numbered SavedModel versions (TF
    Serving's layout), --rest_api_port, and a ModelServerConfig naming the same model: the newest
    version's rows, under the model's name."""
    from model_builders import build_lookup_model
    base = tmp_path / "models" / "lookup"
    ids = np.array([0, 3, 7])
    rows = {version: build_lookup_model(str(base / str(version)), rows=10, dim=4, seed=version, sample_ids=ids)
            for version in (1, 2)}
    config_file = tmp_path / "models.config"
    config_file.write_text(f"model_config_list {{ config {{ name: 'lookup' base_path: '{base}' "
                           f"model_platform: 'tensorflow' }} }}")
    for flags in (("--model_name", "lookup", "--model_base_path", str(base)), ("--model_config_file", str(config_file))):
        work = tmp_path / flags[0].strip("-")
        work.mkdir()
        server = Server(None, work, "lookup", flags)
        try:
            answer = server.predict({"instances": [{"ids": int(i)} for i in ids]})
            assert answer.status_code == 200, answer.text
            np.testing.assert_allclose([p for p in answer.json()["predictions"]], rows[2], atol=1e-6)
            status = requests.get(f"{server.url}/v1/models/lookup", timeout=30).json()
            assert [v["version"] for v in status["model_version_status"]] == ["2"]
        finally:
            assert server.stop() == 0


@pytest.mark.parametrize("flags, message", [
    ((), "give --config, --model_base_path or --model_config_file"),
    (("--model_base_path", "/m", "--model_config_file", "TWO"), "give --model_base_path or --model_config_file, not both"),
    (("--config", '{"models": {"zzz": {}}}', "--model_config_file", "TWO"),
     "names models the --model_config_file does not: zzz"),
    (("--config", '{"models": []}', "--model_base_path", "/m"), "config field 'models': must map model names"),
    (("--model_base_path", "/m", "--batching_parameters_file", "BATCHING"),
     "config field 'batching_parameters_file.max_batch_size': must be >= 1, got 0"),
])
def test_serve_refuses_what_it_cannot_serve_with_a_message(flags, message, tmp_path, capsys):
    from processor.hosts.cli import main
    files = {"TWO": "model_config_list { config { name: 'a' base_path: '/a' } config { name: 'b' base_path: '/b' } }",
             "BATCHING": "max_batch_size { value: 0 }"}
    paths = []
    for flag in flags:
        if flag in files:
            (tmp_path / flag).write_text(files[flag])
            flag = str(tmp_path / flag)
        paths.append(flag)
    assert main(["serve", *paths]) == 1
    assert message in capsys.readouterr().err
