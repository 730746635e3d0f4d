"""Load on the REST host (`python -m processor serve`), on loopback, bounded in time: requests/s and
latency with `--clients` concurrent keep-alive clients, first steady, then while new versions are written
and swapped in (a trainer saves a checkpoint, the server's polling loads it).

    .venv/bin/python benchmarks/rest_load.py                 # builds the example model, starts a server
    .venv/bin/python benchmarks/rest_load.py --url http://127.0.0.1:8501 --model-name rec --checkpoint-dir DIR

Results: a table, and benchmarks/results/rest_load.json (with --json, one JSON line on stdout instead).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import recommendation_model  # noqa: E402
from results_file import save_results  # noqa: E402


def run_load(url: str, body: bytes, seconds: float, clients: int) -> dict:
    latencies, errors = [], []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client():
        session = requests.Session()
        mine, failed = [], []
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                answer = session.post(url, data=body, timeout=30)
                ok = answer.status_code == 200
            except requests.RequestException:
                ok = False
            (mine if ok else failed).append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)
            errors.extend(failed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    ms = np.array(latencies) * 1e3 if latencies else np.array([0.0])
    return {"requests": len(latencies), "errors": len(errors), "requests_per_s": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def served_version(url: str, model_name: str) -> str:
    return requests.get(f"{url}/v1/models/{model_name}", timeout=10).json()["model_version_status"][0]["version"]


def trainer_for(checkpoint_dir: str) -> "recommendation_model.RecommendationModel":
    """A trainer that goes on from the newest checkpoint (built before the load starts: importing
    TensorFlow takes seconds)."""
    trainer = recommendation_model.RecommendationModel()
    newest = open(os.path.join(checkpoint_dir, "checkpoint")).read().split('"')[1]
    trainer.restore(newest if os.path.isabs(newest) else os.path.join(checkpoint_dir, newest))
    return trainer


def swap_versions(trainer, url: str, model_name: str, checkpoint_dir: str, stop: threading.Event, swapped: list) -> None:
    """Trains on, saves a checkpoint, waits for the server to serve it; until stopped."""
    while not stop.is_set():
        trainer.train(1)
        step = trainer.save_checkpoint(checkpoint_dir).rsplit("-", 1)[1]
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline and served_version(url, model_name) != step:
            time.sleep(0.02)
        if served_version(url, model_name) == step:
            swapped.append(step)


def start_server(work: Path) -> tuple:
    dirs, _ = recommendation_model.build(str(work), steps_per_version=3, versions=1)
    config = work / "config.json"
    config.write_text(json.dumps({"savedmodel_dir": dirs.savedmodel_dir, "checkpoint_dir": dirs.checkpoint_dir,
                                  "poll_interval_seconds": 0.2}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "processor", "serve", "--config", str(config),
                               "--model-name", "rec", "--rest_api_port", str(port), "--port", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            requests.get(f"{url}/v1/models/rec", timeout=1)
            return server, url, dirs.checkpoint_dir
        except requests.ConnectionError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the server did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (default: start one on the example model)")
    parser.add_argument("--model-name", default="rec")
    parser.add_argument("--checkpoint-dir", help="where to write new versions for the swap phase")
    parser.add_argument("--seconds", type=float, default=5.0, help="per phase")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    args = parser.parse_args()
    server = None
    with tempfile.TemporaryDirectory() as work:
        url, checkpoint_dir = args.url, args.checkpoint_dir
        if url is None:
            server, url, checkpoint_dir = start_server(Path(work))
        try:
            batch = recommendation_model.random_batch(args.batch, np.random.default_rng(0))
            rows = [{name: (value[i].decode() if isinstance(value[i], bytes) else value[i].tolist())
                     for name, value in batch.items()} for i in range(args.batch)]
            body = json.dumps({"instances": rows}).encode()
            predict = f"{url}/v1/models/{args.model_name}:predict"
            report = {"clients": args.clients, "batch": args.batch, "steady": run_load(predict, body, args.seconds, args.clients)}
            if checkpoint_dir:
                stop, swapped = threading.Event(), []
                swapper = threading.Thread(target=swap_versions, args=(trainer_for(checkpoint_dir), url, args.model_name,
                                                                      checkpoint_dir, stop, swapped))
                swapper.start()
                report["swapping"] = run_load(predict, body, args.seconds, args.clients)
                stop.set()
                swapper.join()
                report["swapping"]["versions_swapped"] = len(swapped)
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=60)
    if args.json:
        print(json.dumps(report))
        return
    print(f"REST predict, batch {args.batch}, {args.clients} clients on loopback")
    print(f"{'phase':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for phase in ("steady", "swapping"):
        if phase in report:
            r = report[phase]
            print(f"{phase:<10} {r['requests_per_s']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>7}")
    if "swapping" in report:
        print(f"versions swapped in during the second phase: {report['swapping']['versions_swapped']}")
    print(f"written to {save_results('rest_load', report)}")


if __name__ == "__main__":
    main()
