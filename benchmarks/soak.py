"""Soak: many full-version swaps under request load, then what the process holds compared with before.

    make soak       # or: .venv/bin/python benchmarks/soak.py [--swaps 1000] [--threads 2]

A model is built, then each swap writes a new version (a copy of the last checkpoint under the next
step, named in the `checkpoint` state file) and calls update(), which loads it beside the serving
version and swaps. Request threads call process() throughout; every answer must be 200. The baseline
is taken after a few warm-up swaps (TensorFlow creates its pools and caches lazily). Prints a table and
one JSON line (also saved to benchmarks/results/soak.json).
Targets: RSS growth < 5 %; file descriptors, threads and loaded versions back to the baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from results_file import save_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests"))
WARMUP_SWAPS = 5


def process_counts(p) -> dict:
    from lifecycle_helpers import loaded_versions
    with open("/proc/self/status") as status:
        rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return {"rss_mb": rss_kb / 1024, "fds": len(os.listdir("/proc/self/fd")),
            "threads": len(os.listdir("/proc/self/task")), "live_versions": loaded_versions(p)}


class VersionWriter:
    """New versions by copying the newest checkpoint under a higher step: a full load each, no training."""

    def __init__(self, checkpoint_dir: Path):
        self.dir = checkpoint_dir
        self.source = max((p[:-len(".index")] for p in os.listdir(checkpoint_dir) if p.endswith(".index")),
                          key=lambda p: int(p.rsplit("-", 1)[1]))
        self.step = int(self.source.rsplit("-", 1)[1])

    def write(self) -> int:
        self.step += 1
        prefix = f"model.ckpt-{self.step}"
        for suffix in (".index", ".data-00000-of-00001"):
            shutil.copyfile(self.dir / (self.source + suffix), self.dir / (prefix + suffix))
        if self.step > 2:  # keep the disk flat: versions two back are neither serving nor named
            for suffix in (".index", ".data-00000-of-00001"):
                stale = self.dir / f"model.ckpt-{self.step - 2}{suffix}"
                if stale.exists() and f"model.ckpt-{self.step - 2}" != self.source:
                    stale.unlink()
        state = self.dir / "checkpoint"
        state.write_text(f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n')
        return self.step


def soak(swaps: int, threads: int) -> dict:
    import processor
    import recommendation_model
    from lifecycle_helpers import serialize

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        subprocess.run([sys.executable, str(ROOT / "examples" / "recommendation_model.py"), str(work), "--steps", "2"],
                       check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        writer = VersionWriter(work / "checkpoints")
        request = serialize(recommendation_model.random_batch(16, np.random.default_rng(0)))
        config = {"savedmodel_dir": str(work / "saved_model"), "checkpoint_dir": str(work / "checkpoints"),
                  "poll_interval_seconds": 0}
        with processor.Processor(config) as p:
            stop = threading.Event()
            answers = {"ok": 0, "failed": 0}
            # A request in flight holds the version it started on, so a count taken right after a swap may
            # see two; counts are taken between requests, with every worker's lock held.
            in_request = [threading.Lock() for _ in range(threads)]

            def serve(lock: threading.Lock):
                while not stop.is_set():
                    with lock:
                        code, _ = p.process(request)
                    answers["ok" if code == 200 else "failed"] += 1

            def counts_between_requests() -> dict:
                for lock in in_request:
                    lock.acquire()
                try:
                    return process_counts(p)
                finally:
                    for lock in in_request:
                        lock.release()

            workers = [threading.Thread(target=serve, args=(lock,)) for lock in in_request]
            for worker in workers:
                worker.start()
            started = time.monotonic()
            try:
                for i in range(swaps + WARMUP_SWAPS):
                    if i == WARMUP_SWAPS:
                        before = counts_between_requests()
                    step = writer.write()
                    p.update()
                    if p.model_info().version_step != step:
                        raise SystemExit(f"swap {i}: serving step {p.model_info().version_step}, expected {step}")
                after = counts_between_requests()  # with the request threads alive, as before
            finally:
                stop.set()
                for worker in workers:
                    worker.join()
            elapsed = time.monotonic() - started
    return {"swaps": swaps, "request_threads": threads, "seconds": round(elapsed, 1),
            "requests_ok": answers["ok"], "requests_failed": answers["failed"], "before": before, "after": after,
            "rss_growth_percent": round(100 * (after["rss_mb"] - before["rss_mb"]) / before["rss_mb"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swaps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/soak.json")
    args = parser.parse_args()
    result = soak(args.swaps, args.threads)
    print(f"{result['swaps']} swaps in {result['seconds']} s under {result['request_threads']} request threads: "
          f"{result['requests_ok']} requests answered 200, {result['requests_failed']} other")
    for key in ("rss_mb", "fds", "threads", "live_versions"):
        print(f"  {key:<8} before {result['before'][key]:>10.1f}   after {result['after'][key]:>10.1f}")
    print(f"  RSS growth {result['rss_growth_percent']} % (target < 5 %)")
    if args.save:
        save_results("soak", result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
