"""TensorFlow's oneDNN kernels on and off (TF_ENABLE_ONEDNN_OPTS), measured through process() from C.

The tensorflow-cpu wheel runs dense layers (MatMul + BiasAdd + activation, fused by Grappler) through
oneDNN unless TF_ENABLE_ONEDNN_OPTS=0 is in the environment when TensorFlow loads. oneDNN sets up its
primitive on every call, which a batch of 1 does not pay back; at larger batches its kernels win. This
measures both sides on two models, so a user can tell which side of the line theirs is on:

- the example model (hidden layers 32, 16: examples/recommendation_model.py);
- the same model with wide hidden layers (1024, 512, 256);

at batch 1, 64 and 512: examples/c_host --bench, one thread, `enable_inline_execute`, the sides
alternating every round, medians of the rounds.

    make bench      # or: .venv/bin/python benchmarks/onednn.py [--rounds R] [--seconds S]

Results: a table on stdout and benchmarks/results/onednn.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from embedding import ROOT, alternate, c_host_bench, medians_of
from results_file import save_results

sys.path.insert(0, str(ROOT / "tests"))

MODELS = {"example (32, 16)": (32, 16), "wide (1024, 512, 256)": (1024, 512, 256)}
BATCHES = (1, 64, 512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    import processor
    import recommendation_model
    from lifecycle_helpers import serialize

    subprocess.run(["make", "-s", "-C", str(ROOT), "c_host"], check=True)
    report = {}
    print(f"{'model':>22} {'batch':>5} {'oneDNN on: p50 ms':>18} {'off: p50 ms':>12} {'on / off':>9}")
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for index, (model_name, hidden_units) in enumerate(MODELS.items()):
            dirs, trainer = recommendation_model.build(str(work / f"model{index}"), steps_per_version=1,
                                                       versions=1, hidden_units=hidden_units)
            trainer.close()
            config = work / f"model{index}.json"
            config.write_text(json.dumps({"savedmodel_dir": dirs.savedmodel_dir, "checkpoint_dir": dirs.checkpoint_dir,
                                          "poll_interval_seconds": 0, "enable_inline_execute": True}))
            report[model_name] = {}
            for batch in BATCHES:
                request = work / f"model{index}_batch{batch}.bin"
                request.write_bytes(serialize(recommendation_model.random_batch(batch, np.random.default_rng(batch))))
                sides = {setting: (lambda setting=setting: c_host_bench(
                             processor.library_path(), config, request, args.seconds,
                             environment=(f"TF_ENABLE_ONEDNN_OPTS={int(setting == 'on')}",)))
                         for setting in ("on", "off")}
                medians = medians_of(alternate(args.rounds, sides))
                report[model_name][f"batch {batch}"] = medians
                on, off = medians["on"]["p50_ms"], medians["off"]["p50_ms"]
                print(f"{model_name:>22} {batch:>5} {on:>18.3f} {off:>12.3f} {on / off:>8.2f}x", flush=True)
    print(f"results: {save_results('onednn', report)}")


if __name__ == "__main__":
    main()
