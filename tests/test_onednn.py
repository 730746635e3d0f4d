"""TF_ENABLE_ONEDNN_OPTS=0, the setting docs/performance.md suggests for small batches: TensorFlow
reads it once when it loads, so it is tested in a fresh process. The served values must still be
TensorFlow's (computed here, with oneDNN on), and a timeline trace shows which kernels ran."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import recommendation_model

HOST = r"""
import json, os, sys
import numpy as np
import processor
import recommendation_model
from tensorflow.python.util import _pywrap_util_port

config = json.loads(sys.argv[1])
answers = {}
with processor.Processor(config) as p:
    for size in (1, 6, 64):
        inputs = recommendation_model.random_batch(size, np.random.default_rng(size))
        outputs = p.predict(inputs)
        answers[size] = {name: np.asarray(value).tolist() for name, value in outputs.items()}
ops = set()
for name in os.listdir(config["timeline_path"]):
    trace = json.load(open(os.path.join(config["timeline_path"], name)))
    ops |= {e["name"] for e in trace["traceEvents"] if e["ph"] == "X"}
json.dump({"onednn": bool(_pywrap_util_port.IsMklEnabled()), "ops": sorted(ops), "answers": answers},
          open(sys.argv[2], "w"))
"""


def serve_in_a_fresh_process(rec_model, tmp_path, onednn: str) -> dict:
    out = tmp_path / f"answers_{onednn}.json"
    config = rec_model.config(poll_interval_seconds=0, enable_inline_execute=True, timeline_start_step=0,
                              timeline_interval_step=1, timeline_trace_count=1,
                              timeline_path=str(tmp_path / f"timelines_{onednn}"))
    environment = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn,
                   "PYTHONPATH": os.path.dirname(recommendation_model.__file__)}
    done = subprocess.run([sys.executable, "-c", HOST, json.dumps(config), str(out)], env=environment,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("onednn", ["0", "1"])
def test_served_values_are_tensorflows_with_onednn_on_and_off(rec_model, reference, tmp_path, onednn):
    served = serve_in_a_fresh_process(rec_model, tmp_path, onednn)
    assert served["onednn"] is (onednn == "1")
    # the dense layers ran on the kernels the setting chose: oneDNN's fused _MklNativeFusedMatMul when on,
    # TensorFlow's own MatMul when off
    onednn_kernels = [op for op in served["ops"] if op.startswith("_Mkl")]
    if onednn == "1":
        assert onednn_kernels, served["ops"]
    else:
        assert not onednn_kernels and any("MatMul" in op for op in served["ops"]), served["ops"]
    latest = rec_model.prefixes()[-1]
    for size, outputs in served["answers"].items():
        inputs = recommendation_model.random_batch(int(size), np.random.default_rng(int(size)))
        expected = reference.predict(latest, inputs)
        for name, value in outputs.items():
            np.testing.assert_allclose(np.asarray(value, dtype=np.float32), expected[name], rtol=1e-5, atol=1e-6,
                                       err_msg=f"batch {size}, output {name}, TF_ENABLE_ONEDNN_OPTS={onednn}")
