"""Latency sampling shared by the benchmark scripts."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, List

# benchmarks/native/latency_bench.cc, as `make bench` (and `make profile`) builds it.
LATENCY_BENCH = Path(__file__).resolve().parents[1] / "build" / "cmake" / "bench" / "latency_bench"


def percentile(samples: List[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def measure(fn: Callable[[], object], iterations: int) -> Dict[str, float]:
    """Median and p99 in ms of `iterations` sequential calls, after a warmup of up to 200."""
    for _ in range(min(200, iterations)):
        fn()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": percentile(samples, 0.5), "p99_ms": percentile(samples, 0.99)}
