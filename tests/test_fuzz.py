"""A short libFuzzer run over the request path under ASan + UBSan (what `make fuzz` runs for a million
inputs): no crash, no sanitizer report, and a real model answering. Built by `make fuzz-build` (a
dependency of `make test` when clang is installed)."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FUZZER = ROOT / "build" / "fuzz" / "fuzz" / "request_fuzzer"
WORK = ROOT / "build" / "fuzz" / "work"
SECONDS = int(os.environ.get("PROCESSOR_FUZZ_SECONDS", "60"))


def test_request_path_survives_a_minute_of_fuzzing(tmp_path):
    if not FUZZER.exists():
        pytest.skip(f"no fuzzer at {FUZZER}: install clang and libclang-rt-14-dev, then `make fuzz-build`")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    env = {**os.environ, "PROCESSOR_FUZZ_MODEL": str(WORK / "model"), "TF_CPP_MIN_LOG_LEVEL": "3",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    run = subprocess.run([str(FUZZER), f"-max_total_time={SECONDS}", "-print_final_stats=1",
                          f"-artifact_prefix={tmp_path}/", str(corpus), str(WORK / "seeds")],
                         capture_output=True, text=True, env=env, timeout=SECONDS + 300)
    report = run.stderr[-6000:]
    assert "ERROR: AddressSanitizer" not in run.stderr and "runtime error:" not in run.stderr, report
    assert run.returncode == 0, report
    runs = int(re.search(r"stat::number_of_executed_units: (\d+)", run.stderr).group(1))
    assert runs > 1000, report
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("leak-*")), report
    ok, rejected = map(int, re.search(r"request_fuzzer: answers 200: (\d+), 400: (\d+)", run.stderr).groups())
    assert ok > 0 and rejected > 0, report  # the model ran, and bad input was met
    tfs_ok, tfs_rejected = map(int, re.search(r"tf_serving answers 200: (\d+), 400: (\d+)", run.stderr).groups())
    assert tfs_ok > 0 and tfs_rejected > 0, report  # in TF Serving's format too
    print(f"{runs} inputs in {SECONDS} s: {ok} answered 200, {rejected} 400 (TF Serving's format: {tfs_ok}, "
          f"{tfs_rejected}); "
          f"{len(list(corpus.iterdir()))} new corpus entries")
