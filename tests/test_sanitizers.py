"""The data plane under AddressSanitizer/LeakSanitizer: a C host cycles initialize -> requests while the
model updates itself and rolls back -> finalize (landing during polls and loads), while this test keeps
writing new versions. Built by `make asan` (a dependency of `make test`)."""
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

ROOT = Path(__file__).resolve().parents[1]
ASAN_LIB = ROOT / "build" / "asan" / "processor" / "libserving_processor.so"
STRESS = ROOT / "build" / "asan" / "update_stress"


@pytest.fixture(scope="module")
def asan_build():
    if not (ASAN_LIB.exists() and STRESS.exists()):
        pytest.skip(f"no AddressSanitizer build at {ASAN_LIB}: run `make asan` (make test builds it)")


def run_stress(model, tmp_path, cycles: int):
    """Runs the ASan stress host for `cycles` cycles while new versions keep appearing; returns
    (stdout, stderr, returncode, versions written)."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(model.config(poll_interval_seconds=0.02)))
    request = tmp_path / "request.bin"
    request.write_bytes(serialize(recommendation_model.random_batch(8, np.random.default_rng(cycles))))
    site_packages = os.path.dirname(os.path.dirname(processor.__file__))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": site_packages,
           "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:detect_odr_violation=0",
           "LSAN_OPTIONS": f"suppressions={ROOT / 'tests' / 'native' / 'lsan.supp'}:print_suppressions=1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    host = subprocess.Popen([str(STRESS), str(ASAN_LIB), str(config), str(request), str(cycles), "400", "2"],
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
        stdout, stderr, code, versions = run_stress(model, tmp_path, cycles)
        assert "ERROR: AddressSanitizer" not in stderr, stderr[-5000:]
        assert "ERROR: LeakSanitizer" not in stderr, stderr[-5000:]
        assert code == 0, stdout + stderr[-3000:]
        assert stdout.startswith(f"cycles {cycles} requests ") and stdout.strip().endswith("failures 0")
        assert versions >= 2
        runs[cycles] = stderr
    # What the binding's module keeps must not grow with the number of initialize/finalize cycles.
    template = "processor/_core.cpython"
    assert suppressed_bytes(runs[2], template) > 0, "the suppression table was not found"
    assert suppressed_bytes(runs[2], template) == suppressed_bytes(runs[6], template)
