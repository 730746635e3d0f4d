"""Request latency of Processor against TensorFlow itself, on the example model, in one run.

    make bench            # or: .venv/bin/python benchmarks/latency.py [--iterations N]

Compared at batch 1, 64 and 512 on the same checkpoint:
  tf1_session_run   tf.compat.v1 Session.run with feed_dict (TF's own Python serving path)
  process_bytes     Processor.process(serialized PredictRequest): decode + run + encode, GIL released
  predict_numpy     Processor.predict(dict of numpy): adds protobuf encoding/decoding in Python
Prints a table (median and p99 in ms, ratio of medians to tf1_session_run) and writes JSON to
benchmarks/results/latency.json. The raw C TF_SessionRun baseline and throughput come with the
performance work.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import recommendation_model  # noqa: E402

import processor  # noqa: E402
from processor import predict_pb2, tensors  # noqa: E402


def measure(fn, iterations: int) -> dict:
    for _ in range(min(50, iterations)):
        fn()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    return {"median_ms": samples[len(samples) // 2], "p99_ms": samples[int(len(samples) * 0.99) - 1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        dirs, trainer = recommendation_model.build(work, steps_per_version=5, versions=1)
        prefix = trainer.save_checkpoint(dirs.checkpoint_dir)
        results = []
        with processor.Processor({"savedmodel_dir": dirs.savedmodel_dir, "checkpoint_dir": dirs.checkpoint_dir}) as p:
            for batch_size in (1, 64, 512):
                batch = recommendation_model.random_batch(batch_size, np.random.default_rng(batch_size))
                request = predict_pb2.PredictRequest()
                for name, value in batch.items():
                    tensors.to_array_proto(np.asarray(value), request.inputs[name])
                serialized = request.SerializeToString()
                feed = trainer.feed(batch)
                fetches = [trainer.prob, trainer.logits, trainer.item_embedding]
                rows = {
                    "tf1_session_run": measure(lambda: trainer.session.run(fetches, feed), args.iterations),
                    "process_bytes": measure(lambda: p.process(serialized), args.iterations),
                    "predict_numpy": measure(lambda: p.predict(batch), args.iterations),
                }
                base = rows["tf1_session_run"]["median_ms"]
                for name, row in rows.items():
                    results.append({"batch": batch_size, "path": name, **row, "ratio_to_tf1": row["median_ms"] / base})
        trainer.close()
    print(f"{'batch':>5} {'path':<18} {'median ms':>10} {'p99 ms':>9} {'vs TF1 run':>10}")
    for r in results:
        print(f"{r['batch']:>5} {r['path']:<18} {r['median_ms']:>10.3f} {r['p99_ms']:>9.3f} {r['ratio_to_tf1']:>9.2f}x")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps({"iterations": args.iterations, "results": results}, indent=2))
    print(f"\nwritten to {out / 'latency.json'}")


if __name__ == "__main__":
    main()
