"""A plain C host, with an empty environment, serving a real model through dlopen()."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import processor
from processor import predict_pb2, tensors

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def c_host(tmp_path_factory) -> str:
    """Built here against the installed header, as a user's host would be."""
    binary = tmp_path_factory.mktemp("c_host") / "c_host"
    subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-std=c11", f"-I{processor.include_dir()}", "-o", str(binary),
                    str(ROOT / "examples" / "c_host" / "c_host.c"), "-pthread", "-ldl"], check=True)
    return str(binary)


def run_host(c_host, config_path, *args):
    return subprocess.run(["env", "-i", c_host, processor.library_path(), str(config_path), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def serve_one_request(c_host, config: dict, batch: dict, tmp_path: Path):
    """Runs the host on `config` with one request of `batch`; returns the run, and the first response
    and the model info as the host wrote them."""
    from lifecycle_helpers import serialize
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    request = tmp_path / "request.bin"
    request.write_bytes(serialize(batch))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = run_host(c_host, config_path, "--out", out_dir, request)
    assert result.returncode == 0, result.stdout + result.stderr
    return (result, predict_pb2.PredictResponse.FromString((out_dir / "0.bin").read_bytes()),
            predict_pb2.ServingModelInfo.FromString((out_dir / "model_info.bin").read_bytes()))


def test_c_host_serves_like_tensorflow_with_an_empty_environment(c_host, rec_model, reference, tmp_path):
    rng = np.random.default_rng(5)
    import recommendation_model
    batches = [recommendation_model.random_batch(n, rng) for n in (1, 7)]
    request_files = []
    for i, batch in enumerate(batches):
        request = predict_pb2.PredictRequest()
        for name, value in batch.items():
            tensors.to_array_proto(np.asarray(value), request.inputs[name])
        path = tmp_path / f"request{i}.bin"
        path.write_bytes(request.SerializeToString())
        request_files.append(path)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\xff\xfe\xfd")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(rec_model.config()))
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    result = run_host(c_host, config, "--out", out_dir, *request_files, garbage)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "initialize -> state 0" in result.stdout
    assert "signature -> 200: {\"signature_name\":\"serving_default\"" in result.stdout
    assert f"{garbage} -> 400" in result.stdout and "not a valid PredictRequest" in result.stdout
    assert "finalize -> done" in result.stdout
    newest = rec_model.prefixes()[-1]
    for i, batch in enumerate(batches):
        response = predict_pb2.PredictResponse.FromString((out_dir / f"{i}.bin").read_bytes())
        expected = reference.predict(newest, batch)
        for name, value in expected.items():
            np.testing.assert_allclose(tensors.from_array_proto(response.outputs[name]), value, atol=1e-5)
    info = predict_pb2.ServingModelInfo.FromString((out_dir / "model_info.bin").read_bytes())
    assert info.model_path == newest


def test_c_host_bench_mode_reports_throughput_and_latency(c_host, rec_model, tmp_path, batch):
    from lifecycle_helpers import serialize
    config = tmp_path / "config.json"
    config.write_text(json.dumps(rec_model.config(poll_interval_seconds=0)))
    request = tmp_path / "request.bin"
    request.write_bytes(serialize(batch))
    result = run_host(c_host, config, "--bench", request, "0.5", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(l for l in result.stdout.splitlines() if l.startswith("bench: "))
    import re
    match = re.fullmatch(r"bench: (\d+) requests in ([\d.]+) s on 2 thread\(s\): (\d+) requests/s, p50 ([\d.]+) ms, "
                         r"p99 ([\d.]+) ms, max ([\d.]+) ms, mean ([\d.]+) ms, 0 errors", line)
    assert match, line
    count, seconds, rate, p50, p99, worst, mean = map(float, match.groups())
    assert count > 10 and abs(rate - count / seconds) <= 0.02 * rate and 0 < p50 <= p99 <= worst
    assert 0 < mean <= worst
    # IDLE_US: each thread sleeps between requests (2 ms here: at most 250 requests in 0.5 s)
    idle = run_host(c_host, config, "--bench", request, "0.5", "1", "2000")
    assert idle.returncode == 0, idle.stdout + idle.stderr
    line = next(l for l in idle.stdout.splitlines() if l.startswith("bench: "))
    assert 10 < int(line.split()[1]) <= 250, line
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\xff\xfe")
    failed = run_host(c_host, config, "--bench", bad, "0.2", "1")
    assert failed.returncode == 1 and "bench: no request answered 200" in failed.stdout


def test_c_host_bad_config_gets_state_minus_one_and_a_reason(c_host, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"savedmodel_dir": "/models/x", "select_session_policy": "FASTEST"}))
    result = run_host(c_host, config)
    assert result.returncode == 1
    assert "initialize -> state -1" in result.stdout
    assert "config field 'select_session_policy': must be one of 'MOD', 'RR'" in result.stderr


def test_c_host_serves_a_model_from_oss(c_host, rec_model, reference, tmp_path, batch):
    """The embedded control plane loads oss2, requests and OpenSSL in a host that dlopen()s the library."""
    from oss_standin import ACCESS_ID, ACCESS_KEY, OssStandin
    server = OssStandin(str(tmp_path / "oss")).start()
    try:
        server.upload_tree(rec_model.savedmodel_dir, "models", "rec/saved_model")
        server.upload_tree(rec_model.checkpoint_dir, "models", "rec/checkpoints", (".index", ".data-", "checkpoint"))
        _, response, info = serve_one_request(c_host, {
            "model_store_type": "oss", "savedmodel_dir": "oss://models/rec/saved_model",
            "checkpoint_dir": "oss://models/rec/checkpoints", "oss_endpoint": server.endpoint,
            "oss_access_id": ACCESS_ID, "oss_access_key": ACCESS_KEY, "local_cache_dir": str(tmp_path / "cache")},
            batch, tmp_path)
    finally:
        server.stop()
    np.testing.assert_allclose(tensors.from_array_proto(response.outputs["prob"]),
                               reference.predict(rec_model.prefixes()[-1], batch)["prob"], atol=1e-5)
    assert info.model_path == "oss://models/rec/checkpoints/model.ckpt-20"


def test_c_host_serves_embeddings_from_redis(c_host, rec_model, reference, tmp_path, batch):
    """The embedded control plane imports the tables with redis-py; lookups go through hiredis."""
    from redis_servers import RedisServer
    server = RedisServer(tmp_path / "redis", password="c-host-pass")
    try:
        result, response, _ = serve_one_request(
            c_host, rec_model.config(feature_store_type="redis", redis_url=server.address,
                                     redis_password="c-host-pass", poll_interval_seconds=0), batch, tmp_path)
    finally:
        server.stop()
    assert "c-host-pass" not in result.stdout + result.stderr
    expected = reference.predict(rec_model.prefixes()[-1], batch)
    for name in expected:
        np.testing.assert_allclose(tensors.from_array_proto(response.outputs[name]), expected[name], atol=1e-6)


@pytest.mark.parametrize("store", ["memory", "DRAM+SSD", "cluster_redis"])
def test_c_host_serves_a_deeprec_embedding_variable_model(c_host, tmp_path, store):
    """DeepRec's EmbeddingVariables (tests/deeprec_models.py) through initialize()/process() of a C host,
    with DeepRec's feature store names: in this process (in memory, or in two tiers with
    ev_storage_type 12 and a DRAM tier of a few rows), or imported into a real redis-server."""
    from deeprec_models import build_deeprec_model
    model = build_deeprec_model(str(tmp_path / "deeprec"))
    ids = np.concatenate([model.keys[:3], [5, 77, 2 ** 33]]).astype(np.int64)
    batch = {"user_id": ids, "dense": np.linspace(-1, 1, len(ids) * 4, dtype=np.float32).reshape(len(ids), 4)}
    config = {"savedmodel_dir": model.savedmodel_dir, "checkpoint_dir": model.checkpoint_dir,
              "poll_interval_seconds": 0, "feature_store_type": store}
    if store == "DRAM+SSD":
        config.update(feature_store_type="memory", ev_storage_type=12, ev_storage_path=str(tmp_path / "ssd"),
                      ev_storage_size=[1024, 1024])
    server = None
    if store == "cluster_redis":
        from redis_servers import RedisServer
        server = RedisServer(tmp_path / "redis", password="ev-pass")
        config.update(redis_url=server.address, redis_password="ev-pass")
    try:
        result, response, info = serve_one_request(c_host, config, batch, tmp_path)
    finally:
        if server is not None:
            server.stop()
    np.testing.assert_allclose(tensors.from_array_proto(response.outputs["prob"]), model.expected(batch), atol=1e-6)
    assert info.model_path == model.prefix and "ev-pass" not in result.stdout + result.stderr
    if store == "DRAM+SSD":
        assert "rows on disk" in result.stderr, result.stderr
        assert os.listdir(tmp_path / "ssd") == []  # the load's files had their names removed


TF_BANNERS = ("absl::InitializeLog", "cpu_feature_guard", "Reading SavedModel", "SavedModel load for tags")
# On CPUs where TensorFlow turns oneDNN on by default (AVX-512 VNNI or BF16, AMX), it says so while its
# library loads, before its logging is set up: TF_CPP_MIN_LOG_LEVEL does not hide that line, with absl's
# header before it (seen on TF 2.21; docs/configuration.md#logs). Only TF_ENABLE_ONEDNN_OPTS=0 does.
ONEDNN_NOTICE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
                           r"STDERR\nI\d{4} [^\n]*\] oneDNN custom operations are on\.[^\n]*\n")


@pytest.mark.parametrize("level", [None, "0"], ids=["default", "TF_CPP_MIN_LOG_LEVEL=0"])
def test_tensorflows_info_lines_are_shown_only_when_asked(c_host, rec_model, tmp_path, level):
    """A C host's and a Python host's stderr hold the library's own lines, and TensorFlow's banners and
    SavedModel reader steps only with TF_CPP_MIN_LOG_LEVEL=0."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(rec_model.config(poll_interval_seconds=0)))
    environment = [] if level is None else [f"TF_CPP_MIN_LOG_LEVEL={level}"]
    c = subprocess.run(["env", "-i", *environment, c_host, processor.library_path(), str(config)],
                       capture_output=True, text=True, timeout=300)
    python = subprocess.run(["env", "-i", *environment, sys.executable, "-c",
                             f"import processor; processor.Processor({str(config)!r}).close()"],
                            capture_output=True, text=True, timeout=300)
    for run in (c, python):
        assert run.returncode == 0, run.stderr
        stderr = ONEDNN_NOTICE.sub("", run.stderr) if level is None else run.stderr
        shown = [banner for banner in TF_BANNERS if banner in stderr]
        assert shown == ([] if level is None else list(TF_BANNERS)), run.stderr
    assert "[processor I] loaded the engine" in c.stderr
