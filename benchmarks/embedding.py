"""What the shim costs a host: process() through libserving_processor.so (the engine loaded with
RTLD_DEEPBIND, TensorFlow's malloc forwarded to the process's) against the engine dlopen()ed directly
(the layout before the shim: no forwarding, no indirection), from the same plain C host
(examples/c_host --bench, under env -i), at batch 1, 64 and 512 on the example model.

    make bench      # or: .venv/bin/python benchmarks/embedding.py [--rounds R] [--seconds S]

The two run as separate processes, alternating (order swapped every round) so that both see the same
machine; the medians over the rounds are reported, and their ratio (shim / engine; 1.00 = no cost).
Results: a table on stdout and benchmarks/results/embedding.json.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from performance import build_model
from results_file import save_results

ROOT = Path(__file__).resolve().parents[1]
C_HOST = ROOT / "examples" / "c_host" / "c_host"
sys.path.insert(0, str(ROOT / "examples"))
BENCH_LINE = re.compile(r"(\d+) requests/s, p50 ([\d.]+) ms, p99 ([\d.]+) ms")


def run_bench(library: str, config: Path, request: Path, seconds: float) -> dict:
    out = subprocess.run(["env", "-i", "TF_CPP_MIN_LOG_LEVEL=3", str(C_HOST), library, str(config), "--bench",
                          str(request), str(seconds), "1"], capture_output=True, text=True, check=True).stdout
    rate, p50, p99 = BENCH_LINE.search(out).groups()
    return {"requests_per_s": float(rate), "p50_ms": float(p50), "p99_ms": float(p99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    import processor
    import recommendation_model
    from processor import predict_pb2, tensors
    libraries = {"shim": processor.library_path(),
                 "engine": str(Path(processor.library_path()).with_name("libserving_processor_engine.so"))}
    report = {"rounds": args.rounds, "seconds": args.seconds, "batches": {}}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        model = build_model(work / "model", 5000)
        config = work / "config.json"
        config.write_text(json.dumps({"savedmodel_dir": model["savedmodel"], "checkpoint_dir": model["checkpoints"],
                                      "poll_interval_seconds": 0}))
        print(f"{'batch':>5} {'path':>6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for batch in (1, 64, 512):
            request = predict_pb2.PredictRequest()
            for name, value in recommendation_model.random_batch(batch, np.random.default_rng(batch)).items():
                tensors.to_array_proto(np.asarray(value), request.inputs[name])
            request_path = work / f"request-{batch}.bin"
            request_path.write_bytes(request.SerializeToString())
            runs = {name: [] for name in libraries}
            for round_index in range(args.rounds):
                order = list(libraries) if round_index % 2 == 0 else list(reversed(libraries))
                for name in order:
                    runs[name].append(run_bench(libraries[name], config, request_path, args.seconds))
            medians = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}
            for name, m in medians.items():
                print(f"{batch:>5} {name:>6} {m['requests_per_s']:>9,.0f} {m['p50_ms']:>8.3f} {m['p99_ms']:>8.3f}")
            ratio = medians["shim"]["p50_ms"] / medians["engine"]["p50_ms"]
            print(f"{batch:>5}  p50 shim / engine = {ratio:.3f}")
            report["batches"][str(batch)] = {"medians": medians, "runs": runs, "p50_ratio": ratio}
    print(f"saved {save_results('embedding', report)}")


if __name__ == "__main__":
    main()
