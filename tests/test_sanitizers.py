"""The data plane under AddressSanitizer/LeakSanitizer and ThreadSanitizer: a C host cycles initialize ->
requests on several threads while the model updates itself and rolls back -> finalize (landing during
polls and loads), while this test keeps writing new versions. Built by `make asan` and `make tsan`
(dependencies of `make test`)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import processor
import recommendation_model
from lifecycle_helpers import serialize
from processor import predict_pb2
from processor.formats.tfrecord import iter_records

ROOT = Path(__file__).resolve().parents[1]
SANITIZER_OPTIONS = {
    "asan": {"ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:detect_odr_violation=0",
             "LSAN_OPTIONS": f"suppressions={ROOT / 'tests' / 'native' / 'lsan.supp'}:print_suppressions=1"},
    "tsan": {"TSAN_OPTIONS": f"halt_on_error=0:report_signal_unsafe=0:"
                             f"suppressions={ROOT / 'tests' / 'native' / 'tsan.supp'}"},
}


def sanitizer_build(name: str):
    library = ROOT / "build" / name / "processor" / "libserving_processor.so"
    stress = ROOT / "build" / name / "update_stress"
    if not (library.exists() and stress.exists()):
        pytest.skip(f"no {name} build at {library}: run `make {name}` (make test builds it)")
    return library, stress


@pytest.fixture(scope="module")
def asan_build():
    return sanitizer_build("asan")


def run_stress(model, tmp_path, cycles: int, build=None, sanitizer: str = "asan", threads: int = 2, **settings):
    """Runs a sanitizer build's stress host for `cycles` cycles while new versions keep appearing, with
    every request logged (the request log's queue, writer thread and rotation run under the sanitizer
    too) and the config's other `settings`; returns (stdout, stderr, returncode, versions written).
    Every request, not a sample: under TSan on a slow machine a cycle may serve only a request or two
    per thread (each new version's first run creates its executors), and a sample of them could be
    empty in every log file kept."""
    library, stress = build or sanitizer_build(sanitizer)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(model.config(poll_interval_seconds=0.02, request_log={
        "path": str(tmp_path / "requests.tfrecord"), "sample_rate": 1.0, "max_records": 100, "backups": 2},
        **settings)))
    request = tmp_path / "request.bin"
    request.write_bytes(serialize(recommendation_model.random_batch(8, np.random.default_rng(cycles))))
    site_packages = os.path.dirname(os.path.dirname(processor.__file__))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": site_packages, "TF_CPP_MIN_LOG_LEVEL": "2",
           **SANITIZER_OPTIONS[sanitizer]}
    host = subprocess.Popen([str(stress), str(library), str(config), str(request), str(cycles), "400", str(threads)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    versions = 0
    while host.poll() is None and versions < 300:
        model.trainer.train(1, seed=versions)
        model.trainer.save_checkpoint(model.checkpoint_dir)  # the host's poller picks these up mid-cycle
        versions += 1
        time.sleep(0.03)
    stdout, stderr = host.communicate(timeout=600)
    return stdout, stderr, host.returncode, versions


def suppressed_bytes(stderr: str, template: str) -> int:
    """Bytes LeakSanitizer attributed to a suppression ("Suppressions used:" table)."""
    match = re.search(rf"^\s*\d+\s+(\d+)\s+{re.escape(template)}\s*$", stderr, re.MULTILINE)
    return int(match.group(1)) if match else 0


def test_finalize_during_polling_and_updates_is_clean_under_asan(asan_build, rec_model, tmp_path):
    model = rec_model.copy(tmp_path)
    runs = {}
    for cycles in (2, 6):
        stdout, stderr, code, versions = run_stress(model, tmp_path, cycles, asan_build)
        assert "ERROR: AddressSanitizer" not in stderr, stderr[-5000:]
        assert "ERROR: LeakSanitizer" not in stderr, stderr[-5000:]
        assert code == 0, stdout + stderr[-3000:]
        assert stdout.startswith(f"cycles {cycles} requests ") and stdout.strip().endswith("failures 0")
        assert versions >= 2
        assert_request_log_is_whole(tmp_path)
        runs[cycles] = stderr
    # What the binding's module keeps must not grow with the number of initialize/finalize cycles.
    template = "processor/_core.cpython"
    assert suppressed_bytes(runs[2], template) > 0, "the suppression table was not found"
    assert suppressed_bytes(runs[2], template) == suppressed_bytes(runs[6], template)


def test_requests_updates_rollbacks_and_finalize_race_free_under_tsan(rec_model, tmp_path):
    build = sanitizer_build("tsan")
    model = rec_model.copy(tmp_path)
    stdout, stderr, code, versions = run_stress(model, tmp_path, 4, build, sanitizer="tsan")
    assert "WARNING: ThreadSanitizer" not in stderr, stderr[-8000:]
    assert code == 0, stdout + stderr[-3000:]
    assert stdout.startswith("cycles 4 requests ") and stdout.strip().endswith("failures 0")
    assert versions >= 2
    assert_request_log_is_whole(tmp_path)


@pytest.mark.parametrize("sanitizer", ["asan", "tsan"])
def test_embeddings_from_redis_are_clean_under_sanitizers(sanitizer, rec_model, tmp_path):
    """The same cycles with the embeddings served from a real Redis: the lookup op's kernels, hiredis
    replies and connection pools on TF's threads, tables registered and released as versions come and go."""
    from redis_servers import RedisServer
    build = sanitizer_build(sanitizer)
    server = RedisServer(tmp_path / "redis")
    try:
        model = rec_model.copy(tmp_path)
        stdout, stderr, code, versions = run_stress(model, tmp_path, 2, build, sanitizer=sanitizer,
                                                    feature_store_type="redis", redis_url=server.address,
                                                    rollback_keep=1)
        import redis
        lookups = redis.Redis(port=server.port).info("commandstats").get("cmdstat_hmget", {}).get("calls", 0)
    finally:
        server.stop()
    assert lookups > 100, f"the requests read {lookups} times from Redis"
    for error in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer"):
        assert error not in stderr, stderr[-8000:]
    assert code == 0, stdout + stderr[-3000:]
    assert stdout.startswith("cycles 2 requests ") and stdout.strip().endswith("failures 0")
    assert versions >= 2


@pytest.mark.parametrize("sanitizer", ["asan", "tsan"])
def test_batching_is_clean_under_sanitizers(sanitizer, rec_model, tmp_path):
    """Six threads on one run slot (enable_batching): requests queue, merge, split and swap versions
    under the sanitizers; every request answered 200."""
    build = sanitizer_build(sanitizer)
    model = rec_model.copy(tmp_path)
    stdout, stderr, code, versions = run_stress(model, tmp_path, 2, build, sanitizer=sanitizer, threads=6,
                                                enable_batching=True, batching_parameters={"num_batch_threads": 1})
    for error in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer"):
        assert error not in stderr, stderr[-8000:]
    assert code == 0, stdout + stderr[-3000:]
    assert stdout.startswith("cycles 2 requests ") and stdout.strip().endswith("failures 0")
    assert "batching: concurrent requests merge, up to 1000 rows a run, 1 run(s) at once" in stderr


def assert_request_log_is_whole(directory):
    """Every record the stress run logged is a complete PredictRequest (finalize wrote the queue out)."""
    logs = sorted(directory.glob("requests.tfrecord*"))
    records = [record for log in logs for record in iter_records(str(log))]
    assert records, "nothing was logged"
    for record in records:
        assert predict_pb2.PredictRequest.FromString(record).inputs["user_id"].dtype == predict_pb2.DT_INT64


def test_every_bad_config_is_refused_without_a_leak_under_lsan(asan_build, rec_model, tmp_path):
    """The config table of test_config.py plus configs naming paths that do not hold what they should,
    each through initialize() of the ASan build: refused with the field named, and nothing leaked."""
    from test_config import BAD_CONFIGS
    library, _ = asan_build
    cases = [(document, f"config field '{field}'") for document, field, _ in BAD_CONFIGS]
    cases += [
        (rec_model.config(savedmodel_dir=str(tmp_path / "missing"), init_timeout_minutes=0), "no SavedModel in"),
        (rec_model.config(checkpoint_dir=str(tmp_path / "missing"), init_timeout_minutes=0), "checkpoint"),
        (rec_model.config(signature_name="nope"), "nope"),
        (rec_model.config(warmup_file_name=str(tmp_path / "missing.bin")), "missing.bin"),
        ("{not json", "not valid JSON"),
        ('["a", "list"]', "must be a JSON object"),
    ]
    files = []
    for i, (document, _) in enumerate(cases):
        path = tmp_path / f"config-{i}.json"
        path.write_text(document if isinstance(document, str) else json.dumps(document))
        files.append(str(path))
    site_packages = os.path.dirname(os.path.dirname(processor.__file__))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": site_packages, "TF_CPP_MIN_LOG_LEVEL": "2",
           **SANITIZER_OPTIONS["asan"]}
    run = subprocess.run([str(ROOT / "build" / "asan" / "config_check"), str(library), *files],
                         capture_output=True, text=True, env=env, timeout=600)
    assert "ERROR: AddressSanitizer" not in run.stderr and "ERROR: LeakSanitizer" not in run.stderr, run.stderr[-5000:]
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert run.stdout.strip() == f"refused {len(cases)} of {len(cases)}"
    assert len(cases) >= 30
    for _, fragment in cases:
        assert fragment in run.stderr, fragment
