"""The feature store, measured in one run: embeddings in the session vs local tables vs Redis vs a
3-master Redis Cluster (real redis-server processes on loopback), batch 4, 64 and 512.

    make bench            # or: .venv/bin/python benchmarks/feature_store.py

Reports, per store, median and p99 of
  lookup       process() of a model that only gathers rows of a 1,000,000-row table (the lookup's
               cost), ids drawn uniformly
  lookup_zipf  the same, ids drawn Zipf(1.1) (a few ids make up most lookups, as in recommendation)
  model        process() of the example recommendation model with a 1,000,000-row item table
with the ratio to the same model with its embeddings in the session; the stores are the session,
local tables, Redis, Redis with the hot-row cache (an eighth of the table's bytes), and a 3-master
Redis Cluster; each store first serves 2,000 requests of 512 new ids (a cache at its steady state).
Also the time to import the model's tables into Redis. Writes benchmarks/results/feature_store.json.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from results_file import save_results
from timing import measure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import recommendation_model  # noqa: E402
from model_builders import build_lookup_model  # noqa: E402

ROWS = 1_000_000
DIM = 16
BATCHES = (4, 64, 512)
ITERATIONS = 300
WARMUP_REQUESTS = 2000  # of batch 512, new ids each, before a store is measured


def requests(kind: str, batch: int, rng) -> bytes:
    from lifecycle_helpers import serialize
    if kind == "lookup":
        return serialize({"ids": rng.integers(0, ROWS, size=batch, dtype=np.int64)})
    if kind == "lookup_zipf":
        return serialize({"ids": ((rng.zipf(1.1, size=batch) - 1) % ROWS).astype(np.int64)})
    inputs = recommendation_model.random_batch(batch, rng)
    inputs["item_id"] = rng.integers(0, ROWS, size=batch, dtype=np.int64)
    return serialize(inputs)


def cache_lookups(p) -> tuple:
    """(ids the hot-row cache answered, ids looked up through it) so far, from the metrics."""
    hits = total = 0
    for line in p.metrics().splitlines():
        if line.startswith(":processor:feature_store_tier_lookups{"):
            value = int(line.rsplit(" ", 1)[1])
            total += value
            hits += value if 'tier="dram"' in line else 0
    return hits, total


def main() -> None:
    import processor
    from redis_servers import RedisClusterOfThree, RedisServer

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        print(f"building the models ({ROWS:,}-row tables)...", flush=True)
        build_lookup_model(str(work / "lookup"), ROWS, DIM)
        dirs, trainer = recommendation_model.build(str(work / "rec"), steps_per_version=1, versions=1, num_items=ROWS)
        trainer.close()
        lookup = {"savedmodel_dir": str(work / "lookup"), "embedding_names": ["table"]}
        models = {"lookup": lookup, "lookup_zipf": lookup,
                  "model": {"savedmodel_dir": dirs.savedmodel_dir, "checkpoint_dir": dirs.checkpoint_dir,
                            "embedding_min_rows": 1000}}
        standalone = RedisServer(work / "redis")
        cluster = RedisClusterOfThree(work / "cluster")
        stores = {"session": {}, "local": {"feature_store_type": "local"},
                  "redis": {"feature_store_type": "redis", "redis_url": standalone.address},
                  # the hot-row cache: an eighth of the 1M x 16 table's bytes
                  "redis+cache": {"feature_store_type": "redis", "redis_url": standalone.address,
                                  "feature_store_cache_bytes": ROWS * DIM * 4 // 8},
                  "cluster": {"feature_store_type": "redis", "redis_url": cluster.url}}
        results = {"rows": ROWS, "iterations": ITERATIONS, "latency": {}, "import": {}}
        try:
            for kind, model in models.items():
                for store, settings in stores.items():
                    namespace = "bench-lookup" if kind.startswith("lookup") else f"bench-{kind}"  # one import each
                    config = {**model, **settings, "poll_interval_seconds": 0, "feature_store_namespace": namespace}
                    if store == "session":
                        config = {k: v for k, v in config.items() if not k.startswith("embedding_")}
                    started = time.monotonic()
                    with processor.Processor(config) as p:
                        load_seconds = time.monotonic() - started
                        if store in ("redis", "cluster") and kind != "lookup_zipf":
                            results["import"][f"{kind}/{store}"] = {"load_seconds": round(load_seconds, 2)}
                        rng = np.random.default_rng(0)
                        for request in [requests(kind, 512, rng) for _ in range(WARMUP_REQUESTS)]:
                            p.process(request)  # a cache at its steady state (the same for every store)
                        for batch in BATCHES:
                            # a new request each call (measure's 200 warmup calls too): a store that caches
                            # rows must not be measured on repeats
                            pool = [requests(kind, batch, rng) for _ in range(ITERATIONS + 201)]
                            cursor = [0]

                            def call():
                                cursor[0] += 1
                                code, body = p.process(pool[cursor[0] % len(pool)])
                                if code != 200:
                                    raise SystemExit(f"{kind}/{store}: {code} {body[:200]!r}")

                            before = cache_lookups(p)
                            results["latency"][f"{kind}/{store}/{batch}"] = measure(call, ITERATIONS)
                            after = cache_lookups(p)
                            if after[1] > before[1]:  # the share of ids the hot-row cache answered
                                results["latency"][f"{kind}/{store}/{batch}"]["cache_hits"] = round(
                                    (after[0] - before[0]) / (after[1] - before[1]), 3)
                            print(f"  {kind:6} {store:8} batch {batch:3}: "
                                  f"{results['latency'][f'{kind}/{store}/{batch}']['median_ms']:.3f} ms", flush=True)
        finally:
            standalone.stop()
            cluster.stop()

    print("\nprocess() latency, ms (median / p99), and the median's ratio to embeddings in the session")
    print(f"{'':11} {'batch':>5} " + " ".join(f"{store:>22}" for store in stores))
    for kind in models:
        for batch in BATCHES:
            base = results["latency"][f"{kind}/session/{batch}"]["median_ms"]
            cells = []
            for store in stores:
                m = results["latency"][f"{kind}/{store}/{batch}"]
                cells.append(f"{m['median_ms']:7.3f} / {m['p99_ms']:6.3f} {m['median_ms'] / base:5.2f}x")
            print(f"{kind:11} {batch:>5} " + " ".join(f"{c:>22}" for c in cells))
    print("\nids the hot-row cache answered (redis+cache):")
    for key, value in results["latency"].items():
        if "cache_hits" in value:
            print(f"  {key:28} {value['cache_hits']:.1%}")
    print("\nfirst load with the import into Redis (1 writer), seconds:")
    for name, value in results["import"].items():
        print(f"  {name:16} {value['load_seconds']:8.2f}")
    print(f"saved {save_results('feature_store', results)}")


if __name__ == "__main__":
    main()
