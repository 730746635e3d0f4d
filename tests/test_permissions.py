"""Model files the process may not read. The tests run as root, which reads any file, so the serving
process is started with setpriv, without the capabilities that bypass file permissions."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from test_lifecycle import publish

CHILD = r"""
import json, os, sys, logging
logging.basicConfig(level=logging.INFO)
import processor
config, shard = json.loads(sys.argv[1]), sys.argv[2]
out = {}
with processor.Processor(config) as p:
    out["first"] = p.model_info().model_path
    os.chmod(shard, 0o644)  # the owner may still change modes: the repair
    out["updated"] = p.update()
    out["after"] = p.model_info().model_path
print(json.dumps(out))
"""


def without_file_permission_bypass(args):
    setpriv = shutil.which("setpriv")
    if not setpriv:
        pytest.skip("setpriv (util-linux) is not installed: cannot drop CAP_DAC_OVERRIDE to test permissions")
    if os.geteuid() != 0:
        return args  # permissions already apply
    drop = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}", *args]


def test_an_unreadable_version_is_skipped_with_the_reason_and_served_once_readable(rec_model, tmp_path):
    model = rec_model.copy(tmp_path)
    (tmp_path / "staging").mkdir()
    older = model.prefixes()[-1]
    newer, _ = publish(model, tmp_path / "staging", seed=21)
    with open(os.path.join(model.checkpoint_dir, "checkpoint"), "w") as state:  # both versions named
        state.write(f'model_checkpoint_path: "{newer}"\nall_model_checkpoint_paths: "{older}"\n'
                    f'all_model_checkpoint_paths: "{newer}"\n')
    shard = newer + ".data-00000-of-00001"
    os.chmod(shard, 0)
    run = subprocess.run(without_file_permission_bypass(
        [sys.executable, "-c", CHILD, json.dumps(model.config(poll_interval_seconds=0)), shard]),
        capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out == {"first": older, "updated": True, "after": newer}
    assert f"data shard {os.path.basename(shard)} is missing or unreadable" in run.stderr


def test_an_unreadable_state_file_fails_initialize_with_the_reason(rec_model, tmp_path):
    model = rec_model.copy(tmp_path)
    state = os.path.join(model.checkpoint_dir, "checkpoint")
    os.chmod(state, 0)
    script = "import processor, sys, json; processor.Processor(json.loads(sys.argv[1]))"
    run = subprocess.run(without_file_permission_bypass(
        [sys.executable, "-c", script, json.dumps(model.config(poll_interval_seconds=0, init_timeout_minutes=0))]),
        capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert run.returncode != 0
    assert "ModelLoadError" in run.stderr and "Permission denied" in run.stderr, run.stderr[-2000:]
