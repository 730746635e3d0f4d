"""Server-side batching (enable_batching) measured from C in one process, beside batching off.

    make bench            # or: .venv/bin/python benchmarks/batching.py [--seconds 2 --rounds 3]

latency_bench's `load` mode initializes the same model twice in one process, without and with
"enable_batching": true (nothing else set: the adaptive mode), and alternates THREADS threads sending
one request for SECONDS at each, ROUNDS times, order swapped every round. Rows, for the example
recommendation model and the 300-input model (tests/model_builders.py build_wide_model):
  16 threads x batch 1    requests/s >= 3x unbatched, p99 no worse than unbatched p99
  1 thread x batch 1      p50 within noise of unbatched (an idle model adds no wait)
  16 threads x batch 64   requests/s not below unbatched
with the mean rows per run the batching formed (its :processor:batch_size histogram), and each row
again against unbatched with enable_inline_execute (graphs run in the caller's thread, as a merged
run does in its leader's): what merging adds beyond running inline.
Writes benchmarks/results/batching.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from results_file import save_results
from timing import LATENCY_BENCH as BENCH

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests"))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
ROWS = ((16, 1), (1, 1), (16, 64))  # (threads, batch)


def batch_sizes(metrics: str) -> float:
    """Mean rows per run, from the Prometheus text."""
    values = {}
    for line in metrics.splitlines():
        for name in (":processor:batch_size_sum", ":processor:batch_size_count"):
            if line.startswith(name + "{"):
                values[name] = float(line.rsplit(" ", 1)[1])
    count = values.get(":processor:batch_size_count", 0)
    return values.get(":processor:batch_size_sum", 0) / count if count else 0.0


def load(off: dict, on: dict, work: Path, name: str, request: bytes, threads: int, seconds: float,
         rounds: int) -> dict:
    """latency_bench load: config `off` against `on` in one process."""
    import processor
    paths = work / f"{name}_off.json", work / f"{name}_on.json"
    paths[0].write_text(json.dumps(off))
    paths[1].write_text(json.dumps(on))
    request_path = work / f"{name}.bin"
    request_path.write_bytes(request)
    out = subprocess.run([str(BENCH), "load", str(processor.library_path()), *map(str, paths), str(request_path),
                          str(threads), str(seconds), str(rounds)], check=True, capture_output=True, text=True,
                         env=ENV).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return {"unbatched": result["a"], "batched": result["b"], "mean_batch_rows": batch_sizes(result["b_metrics"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parameters", type=json.loads, default=None,
                        help='batching_parameters for the batched side, e.g. \'{"num_batch_threads": 2}\'')
    args = parser.parse_args()
    if not BENCH.exists():
        sys.exit(f"{BENCH} is missing: run `make bench`")
    import recommendation_model
    from lifecycle_helpers import serialize
    from model_builders import build_wide_model
    from processor import predict_pb2, tensors

    results = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        dirs, trainer = recommendation_model.build(str(work / "rec"), steps_per_version=3, versions=1)
        trainer.close()
        wide = build_wide_model(str(work / "wide"), 300)
        models = {
            "example": ({"savedmodel_dir": dirs.savedmodel_dir, "checkpoint_dir": dirs.checkpoint_dir,
                         "poll_interval_seconds": 0},
                        lambda n: serialize(recommendation_model.random_batch(n, np.random.default_rng(n)))),
            "300 inputs": ({"savedmodel_dir": wide, "poll_interval_seconds": 0}, lambda n: wide_request(n)),
        }

        def wide_request(n: int) -> bytes:
            request = predict_pb2.PredictRequest()
            rng = np.random.default_rng(n)
            for i in range(300):
                tensors.to_array_proto(rng.standard_normal(n).astype(np.float32), request.inputs[f"feature_{i}"])
            return request.SerializeToString()

        batched = {"enable_batching": True}
        if args.parameters:
            batched["batching_parameters"] = args.parameters
        for model, (config, request) in models.items():
            for threads, batch in ROWS:
                name = f"{model.replace(' ', '_')}_{threads}_{batch}"
                row = load(config, {**config, **batched}, work, name, request(batch), threads, args.seconds,
                           args.rounds)
                # Beside the fastest unbatched setting: graphs run in the caller's thread, as merged runs do.
                inline = load({**config, "enable_inline_execute": True}, {**config, **batched}, work, name + "_inline",
                              request(batch), threads, args.seconds, args.rounds)
                off, on = row["unbatched"], row["batched"]
                row.update(model=model, threads=threads, batch=batch, unbatched_inline=inline["unbatched"],
                           throughput_ratio=on["requests_per_s"] / off["requests_per_s"],
                           inline_throughput_ratio=inline["batched"]["requests_per_s"] /
                           inline["unbatched"]["requests_per_s"],
                           p50_ratio=on["median_ms"] / off["median_ms"], p99_ratio=on["p99_ms"] / off["p99_ms"])
                results.append(row)
                print(f"{model:10} {threads:2} threads x batch {batch:3}: "
                      f"{off['requests_per_s']:8.0f} -> {on['requests_per_s']:8.0f} req/s ({row['throughput_ratio']:.2f}x; "
                      f"{row['inline_throughput_ratio']:.2f}x of inline), p50 {off['median_ms']:.3f} -> "
                      f"{on['median_ms']:.3f} ms, p99 {off['p99_ms']:.3f} -> {on['p99_ms']:.3f} ms, "
                      f"{row['mean_batch_rows']:.1f} rows a run", flush=True)
    print(f"results: {save_results('batching', results)}")


if __name__ == "__main__":
    main()
