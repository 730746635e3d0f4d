"""Model updates, measured on a model with a 1,000,000-row embedding table, in one run.

    make bench            # or: .venv/bin/python benchmarks/lifecycle.py

Reports
  raw_restore_ms           TensorFlow's own Saver.restore of the checkpoint (Python, same machine)
  full_update_ms           Processor.update(): load the SavedModel beside the serving one, restore, swap
  in_place_update_ms       the same with version_policy "resource_preserving" (restore into the live session)
  delta_update_ms          applying a delta of 1 % of the rows (10,000) of the 1M-row table
  p99 steady / during      request latency (batch 64, one client thread) without updates and while
                           full updates run back to back
  peak RSS growth          during one full update, per policy (separate processes, VmHWM reset first)
and writes benchmarks/results/lifecycle.json, and docs/plots/p99_across_updates.svg: p50 and p99 per
quarter second while two new versions arrive (copied in as a publisher would) and are swapped in.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from results_file import save_results
from timing import percentile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import recommendation_model  # noqa: E402

ROWS = 1_000_000
PEAK_RSS_PROBE = """
import json, sys, processor
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
with processor.Processor(json.loads(sys.argv[1])) as p:
    print("ready", flush=True)
    sys.stdin.readline()  # the parent has written a newer version
    open("/proc/self/clear_refs", "w").write("5")  # resets the peak (VmHWM) to the current RSS
    before = rss("VmRSS")
    assert p.update()
    print(json.dumps({"rss_before": before, "peak": rss("VmHWM"), "rss_after": rss("VmRSS")}), flush=True)
"""


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def latencies_while(p, request, seconds, background=None):
    samples, stop = [], threading.Event()
    worker = threading.Thread(target=background, args=(stop,)) if background else None
    if worker:
        worker.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        code, _ = p.process(request)
        samples.append((time.perf_counter() - start) * 1e3)
        assert code == 200
    stop.set()
    if worker:
        worker.join()
    return samples


def latency_across_updates(p, request, checkpoints, staged, seconds=6.0, window=0.25) -> dict:
    """One client thread's latency over time while the versions in `staged` (prefixes saved elsewhere)
    arrive in `checkpoints` one at a time, each followed by p.update(): p50 and p99 per `window`
    seconds, and when each update started and returned."""
    import shutil
    samples, updates, stop = [], [], threading.Event()
    started = time.perf_counter()

    def publish_and_update():
        for i, prefix in enumerate(staged):
            while time.perf_counter() - started < (i + 1) * seconds / (len(staged) + 1):
                if stop.wait(0.01):
                    return
            directory, base = os.path.split(prefix)
            for name in os.listdir(directory):
                if name.startswith(base + "."):
                    shutil.copy(os.path.join(directory, name), checkpoints)
            with open(os.path.join(checkpoints, "checkpoint"), "w") as f:
                f.write(f'model_checkpoint_path: "{base}"\n')
            begun = time.perf_counter() - started
            assert p.update()
            updates.append((begun, time.perf_counter() - started))

    worker = threading.Thread(target=publish_and_update)
    worker.start()
    while time.perf_counter() - started < seconds:
        begin = time.perf_counter()
        code, _ = p.process(request)
        samples.append((begin - started, (time.perf_counter() - begin) * 1e3))
        assert code == 200
    stop.set()
    worker.join()
    windows = {}
    for at, ms in samples:
        windows.setdefault(int(at / window), []).append(ms)
    return {"window_s": window, "updates": updates,
            "p50": [((i + 0.5) * window, percentile(v, 0.5)) for i, v in sorted(windows.items())],
            "p99": [((i + 0.5) * window, percentile(v, 0.99)) for i, v in sorted(windows.items())]}


def plot_latency_across_updates(timeline: dict) -> Path:
    """docs/plots/p99_across_updates.svg."""
    from plots import DOCS_PLOTS, line_chart
    markers = [(begun, "update") for begun, _ in timeline["updates"]] + [(done, "swapped") for _, done in timeline["updates"]]
    return line_chart(DOCS_PLOTS / "p99_across_updates.svg",
                      f"Latency across full updates ({ROWS:,}-row table, batch 64, one client thread)",
                      "seconds", f"ms per request, per {timeline['window_s']} s window",
                      {"p99": timeline["p99"], "p50": timeline["p50"]}, markers=markers,
                      caption="make bench (benchmarks/lifecycle.py)")


def peak_rss(config, write_version) -> dict:
    """Peak RSS of a fresh process across one update to the version `write_version` writes."""
    probe = subprocess.Popen([sys.executable, "-c", PEAK_RSS_PROBE, json.dumps(config)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert probe.stdout.readline().strip() == "ready"
    write_version()
    out, _ = probe.communicate("go\n", timeout=600)
    assert probe.returncode == 0, out
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    import processor
    from processor import predict_pb2, tensors, training
    results = {}
    with tempfile.TemporaryDirectory() as work:
        trainer = recommendation_model.RecommendationModel(num_items=ROWS)
        savedmodel = trainer.export_savedmodel(os.path.join(work, "saved_model"))
        checkpoints = os.path.join(work, "checkpoints")
        os.makedirs(checkpoints)
        trainer.train(2)
        first = trainer.save_checkpoint(checkpoints)
        config = {"savedmodel_dir": savedmodel, "checkpoint_dir": checkpoints, "poll_interval_seconds": 0}
        results["raw_restore_ms"] = min(timed(lambda: trainer.restore(first)) for _ in range(3))

        batch = recommendation_model.random_batch(64, np.random.default_rng(0))
        request = predict_pb2.PredictRequest()
        for name, value in batch.items():
            tensors.to_array_proto(np.asarray(value), request.inputs[name])
        request = request.SerializeToString()

        def next_version():
            trainer.train(1)
            return trainer.save_checkpoint(checkpoints)

        with processor.Processor(config) as p:
            full = []
            for _ in range(3):
                next_version()
                full.append(timed(lambda: p.update()))
            results["full_update_ms"] = float(np.median(full))

            rows = np.random.default_rng(1).choice(ROWS, ROWS // 100, replace=False)
            step = int(trainer.session.run(trainer.global_step))
            deltas = []
            for i in range(3):
                step += 1
                training.save_incremental_checkpoint(trainer.session, checkpoints, step, {"item_embedding": rows})
                deltas.append(timed(lambda: p.update()))
                assert p.model_info().delta_step == step
            results["delta_update_ms"] = float(np.median(deltas))
            results["delta_rows"] = int(len(rows))

            steady = latencies_while(p, request, 3.0)

            def keep_updating(stop):
                while not stop.is_set():
                    next_version()
                    p.update()

            during = latencies_while(p, request, 3.0, keep_updating)
            results["p50_steady_ms"], results["p99_steady_ms"] = percentile(steady, 0.5), percentile(steady, 0.99)
            results["p50_during_updates_ms"], results["p99_during_updates_ms"] = percentile(during, 0.5), percentile(during, 0.99)

            staging = os.path.join(work, "staging")
            os.makedirs(staging)
            staged = []
            for _ in range(2):
                trainer.train(1)
                staged.append(trainer.save_checkpoint(staging))
            timeline = latency_across_updates(p, request, checkpoints, staged)

        with processor.Processor({**config, "version_policy": "resource_preserving"}) as p:
            in_place = []
            for _ in range(3):
                next_version()
                in_place.append(timed(lambda: p.update()))
            results["in_place_update_ms"] = float(np.median(in_place))

        for policy in ("availability_preserving", "resource_preserving"):
            peak = peak_rss({**config, "version_policy": policy}, next_version)
            results[f"peak_rss_growth_mb[{policy}]"] = (peak["peak"] - peak["rss_before"]) / 2**20
        trainer.close()

    print(f"model: {ROWS:,}-row item embedding (dim {recommendation_model.EMBEDDING_DIM}), batch 64 requests")
    for key, value in results.items():
        print(f"  {key:<44} {value:10.2f}")
    print(f"  {'full update / raw restore':<44} {results['full_update_ms'] / results['raw_restore_ms']:10.2f}x")
    print(f"  {'delta update / full update':<44} {results['delta_update_ms'] / results['full_update_ms']:10.2f}x")
    print(f"  {'p99 per window, highest / steady median':<44} {max(y for _, y in timeline['p99']):10.2f} / "
          f"{sorted(y for _, y in timeline['p99'])[len(timeline['p99']) // 2]:.2f} ms")
    print(f"\nwritten to {save_results('lifecycle', {**results, 'latency_across_updates': timeline})}")
    print(f"plot: {plot_latency_across_updates(timeline)}")


if __name__ == "__main__":
    main()
