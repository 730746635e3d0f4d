"""Local tables in two tiers (ev_storage_type 12: the hot rows in DRAM within ev_storage_size's budget,
every row on disk) against the same table all in DRAM ("local"), measured in one run.

    make bench            # or: .venv/bin/python benchmarks/tiers.py [--rows 10000000]

The model only gathers rows of one [rows, 64] float32 table (10,000,000 rows: 2.56 GB), served from
its checkpoint. Each store runs in a process of its own, so that its memory is its own; both serve
side by side and the measured calls alternate between them in rounds, so that the shared machine's
drift falls on both alike:
  load          seconds to the first version (for tiers: the rows streamed into the disk tier)
  memory        RssAnon (the process's own memory) and RssFile (mapped files: the page cache of the
                disk tier) before the load, at their peak during it, after it, and after serving;
                peak RssAnon while a second version (the checkpoint hard-linked under the next step, as
                a copy would arrive) is imported beside the serving one and swapped in
  first         the first request's latency (batch 512)
  latency       process() median / p99 at batch 64 and 512, Zipf(1.1) ids (spread over the key space,
                as hashed feature ids are) and uniform ids, a new request per call, after 5,000
                requests of warmup (the DRAM tier at its steady state); 1,000 calls in 10 rounds
  dram hits     the share of ids the DRAM tier answered during the measured calls
The tiers' budget is 300 MB for the 2.56 GB table (one 8.5th). Writes benchmarks/results/tiers.json.
"""
from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DIM = 64
DRAM_BUDGET = 300 * 10**6
BATCHES = (64, 512)
WARMUP_REQUESTS = 5000
ITERATIONS = 1000
ROUNDS = 10


def sample_ids(rows: int) -> np.ndarray:
    """Ids whose rows are checked against TensorFlow's."""
    return np.array([0, 1, 7, rows // 3, rows - 1], np.int64)


def memory() -> dict:
    """RssAnon and RssFile of this process, MB."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("RssAnon", "RssFile"):
                values[name] = int(rest.split()[0]) / 1024
    return values


class PeakSampler:
    """Samples memory() every 20 ms while in its `with` block; .peak holds each field's maximum."""

    def __init__(self):
        self.peak = memory()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.02):
            for name, value in memory().items():
                self.peak[name] = max(self.peak[name], value)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        for name, value in memory().items():
            self.peak[name] = max(self.peak[name], value)


def ids_of(kind: str, rows: int, batch: int, rng) -> np.ndarray:
    if kind == "uniform":
        return rng.integers(0, rows, size=batch, dtype=np.int64)
    ranks = (rng.zipf(1.1, size=batch) - 1) % rows
    return (ranks * 2654435761) % rows  # a bijection of [0, rows): hot ids spread over the key space


def dram_share(p) -> tuple:
    """(ids the DRAM tier answered, ids looked up) so far, from the metrics (0, 0 without tiers)."""
    hits = total = 0
    for line in p.metrics().splitlines():
        if line.startswith(":processor:feature_store_tier_lookups{"):
            value = int(line.rsplit(" ", 1)[1])
            total += value
            hits += value if 'tier="dram"' in line else 0
    return hits, total


class Worker:
    """One store, served in a process of its own (so that its memory is its own), driven by commands on
    stdin, one JSON line each, answered on stdout."""

    def __init__(self, settings: dict):
        import processor
        self.settings, self.rows = settings, settings["rows"]
        self.rng = np.random.default_rng(settings["seed"])
        self.before = memory()
        started = time.monotonic()
        with PeakSampler() as load:
            self.p = processor.Processor(settings["config"])
        self.loaded = {"load_seconds": round(time.monotonic() - started, 2), "before": self.before,
                       "load_peak": load.peak, "after_load": memory()}
        if not np.array_equal(self.p.predict({"ids": sample_ids(self.rows)})["rows"], np.load(settings["sample_rows"])):
            raise SystemExit(f"{settings['store']}: rows differ from TensorFlow's")

    def requests(self, kind: str, batch: int, count: int) -> list:
        from lifecycle_helpers import serialize
        return [serialize({"ids": ids_of(kind, self.rows, batch, self.rng)}) for _ in range(count)]

    def run(self, requests: list) -> list:
        """Milliseconds of each process() call."""
        samples = []
        for request in requests:
            begin = time.perf_counter()
            code, body = self.p.process(request)
            samples.append((time.perf_counter() - begin) * 1e3)
            if code != 200:
                raise SystemExit(f"{self.settings['store']}: {code} {body[:200]!r}")
        return samples

    def command(self, cmd: dict) -> dict:
        if cmd["cmd"] == "loaded":
            first = self.run(self.requests("zipf", 512, 1))[0]
            return {**self.loaded, "first_ms": round(first, 3)}
        if cmd["cmd"] == "warm":
            self.run(self.requests(cmd["kind"], 512, cmd["count"]))
            return {}
        if cmd["cmd"] == "measure":  # a new request per call
            requests = self.requests(cmd["kind"], cmd["batch"], cmd["count"])
            hits0, total0 = dram_share(self.p)
            samples = self.run(requests)
            hits1, total1 = dram_share(self.p)
            return {"samples": samples, "dram_hits": hits1 - hits0, "lookups": total1 - total0}
        if cmd["cmd"] == "update":  # the second version (the parent links it in)
            started = time.monotonic()
            with PeakSampler() as update:
                if not self.p.update():
                    raise SystemExit(f"{self.settings['store']}: the second version did not load")
            return {"update_seconds": round(time.monotonic() - started, 2), "update_peak": update.peak,
                    "after_serving": self.after_serving}
        if cmd["cmd"] == "memory":
            self.after_serving = memory()
            return {}
        raise SystemExit(f"unknown command {cmd}")


def serve_commands(settings: dict) -> None:
    worker = Worker(settings)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "close":
            worker.p.close()
            return
        print(json.dumps(worker.command(cmd)), flush=True)


class WorkerProcess:
    def __init__(self, settings: dict):
        self.name = settings["store"]
        self.process = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(settings)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        cwd=Path(__file__).parent)
        self._read()

    def _read(self) -> dict:
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise SystemExit(f"{self.name} stopped (its stderr is above)")
            if line.startswith("{"):
                return json.loads(line)

    def __call__(self, **cmd) -> dict:
        self.process.stdin.write(json.dumps(cmd) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.process.stdin.write(json.dumps({"cmd": "close"}) + "\n")
        self.process.stdin.flush()
        self.process.wait()


def build(work: Path, rows: int) -> dict:
    from model_builders import build_lookup_model
    from processor import training
    print(f"building a [{rows:,}, {DIM}] table ({rows * DIM * 4 / 1e9:.2f} GB)...", flush=True)
    np.save(work / "sample_rows.npy", build_lookup_model(str(work / "saved_model"), rows, DIM,
                                                         sample_ids=sample_ids(rows)))
    checkpoints = work / "checkpoints"
    checkpoints.mkdir()
    for suffix in (".index", ".data-00000-of-00001"):  # the SavedModel's variables are step 1's checkpoint
        os.link(work / "saved_model" / "variables" / f"variables{suffix}", checkpoints / f"model.ckpt-1{suffix}")
    training.write_checkpoint_state(str(checkpoints), [str(checkpoints / "model.ckpt-1")])
    return {"savedmodel_dir": str(work / "saved_model"), "checkpoint_dir": str(checkpoints),
            "embedding_names": ["table"], "feature_store_type": "local", "poll_interval_seconds": 0}


def link_second_version(checkpoint_dir: str, present: bool) -> None:
    """The same rows under step 2, hard-linked as a copy would arrive (or removed again)."""
    from processor import training
    checkpoints = Path(checkpoint_dir)
    for suffix in (".index", ".data-00000-of-00001"):
        target = checkpoints / f"model.ckpt-2{suffix}"
        if present and not target.exists():
            os.link(checkpoints / f"model.ckpt-1{suffix}", target)
        elif not present and target.exists():
            target.unlink()
    steps = [1, 2] if present else [1]
    training.write_checkpoint_state(str(checkpoints), [str(checkpoints / f"model.ckpt-{s}") for s in steps])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        serve_commands(json.loads(args.worker))
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("PROCESSOR_BENCH_DIR")) as work:
        work = Path(work)
        model = build(work, args.rows)
        stores = {"local": {}, "tiers": {"ev_storage_type": 12, "ev_storage_path": str(work / "ssd"),
                                          "ev_storage_size": [DRAM_BUDGET]}}
        results = {"rows": args.rows, "dim": DIM, "dram_budget_bytes": DRAM_BUDGET, "stores": {}}
        workers = {}
        for index, (store, settings) in enumerate(stores.items()):  # loaded one after the other
            print(f"loading {store}...", flush=True)
            workers[store] = WorkerProcess({"store": store, "rows": args.rows, "seed": index,
                                            "sample_rows": str(work / "sample_rows.npy"),
                                            "config": {**model, **settings}})
            results["stores"][store] = {**workers[store](cmd="loaded"), "latency": {}, "dram_hits": {}}
        # Both serve side by side; rounds alternate between them, so that the machine's drift (shared,
        # noisy) falls on both alike.
        for kind in ("zipf", "uniform"):
            for worker in workers.values():
                worker(cmd="warm", kind=kind, count=WARMUP_REQUESTS)
            for batch in BATCHES:
                samples = {store: [] for store in workers}
                hits = {store: [0, 0] for store in workers}
                for round_ in range(ROUNDS):
                    order = list(workers.items())
                    for store, worker in order if round_ % 2 == 0 else order[::-1]:
                        # TensorFlow's idle pool threads spin for a while before they sleep: the other
                        # process's must be asleep before these calls are timed.
                        time.sleep(0.2)
                        answer = worker(cmd="measure", kind=kind, batch=batch, count=ITERATIONS // ROUNDS)
                        samples[store] += answer["samples"]
                        hits[store][0] += answer["dram_hits"]
                        hits[store][1] += answer["lookups"]
                for store in workers:
                    ordered = sorted(samples[store])
                    results["stores"][store]["latency"][f"{kind}/{batch}"] = {
                        "median_ms": ordered[len(ordered) // 2], "p99_ms": ordered[len(ordered) * 99 // 100]}
                    if hits[store][1]:
                        results["stores"][store]["dram_hits"][f"{kind}/{batch}"] = round(hits[store][0] / hits[store][1], 3)
                print(f"  {kind} {batch}: " + ", ".join(
                    f"{s} {results['stores'][s]['latency'][f'{kind}/{batch}']['median_ms']:.3f} ms" for s in workers),
                      flush=True)
        for worker in workers.values():
            worker(cmd="memory")
        link_second_version(model["checkpoint_dir"], True)
        for store, worker in workers.items():  # each imports the second version while serving the first
            print(f"{store}: second version...", flush=True)
            results["stores"][store].update(worker(cmd="update"))
        for worker in workers.values():
            worker.close()
    report(results)
    print(f"saved {save_results('tiers', results)}")


def report(results: dict) -> None:
    local, tiers = results["stores"]["local"], results["stores"]["tiers"]
    print(f"\n[{results['rows']:,}, {results['dim']}] float32 table; tiers: DRAM budget "
          f"{results['dram_budget_bytes'] / 1e6:.0f} MB")
    print(f"{'':28} {'local (all DRAM)':>22} {'tiers':>22} {'ratio':>7}")
    for key in local["latency"]:
        a, b = local["latency"][key], tiers["latency"][key]
        print(f"{'p50 / p99 ms ' + key:28} {a['median_ms']:10.3f} / {a['p99_ms']:8.3f} "
              f"{b['median_ms']:10.3f} / {b['p99_ms']:8.3f} {b['median_ms'] / a['median_ms']:6.2f}x")
    for key, share in tiers["dram_hits"].items():
        print(f"{'DRAM tier hits ' + key:28} {'':>22} {share:>22.1%}")
    print(f"{'load s':28} {local['load_seconds']:>22} {tiers['load_seconds']:>22}")
    print(f"{'first request ms':28} {local['first_ms']:>22} {tiers['first_ms']:>22}")
    for phase in ("before", "load_peak", "after_load", "after_serving", "update_peak"):
        cells = [f"{s[phase]['RssAnon']:8.0f} / {s[phase]['RssFile']:8.0f}" for s in (local, tiers)]
        print(f"{'RssAnon / RssFile MB ' + phase:28} {cells[0]:>22} {cells[1]:>22}")
    print(f"{'second version s':28} {local['update_seconds']:>22} {tiers['update_seconds']:>22}")


if __name__ == "__main__":
    main()
