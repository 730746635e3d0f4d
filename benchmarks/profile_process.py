"""Where process() spends its instructions: callgrind over a C host calling process(), counted only
inside process() on the calling thread (TF's inter-op threads run the kernels; they are not counted).

    make profile        # or: .venv/bin/python benchmarks/profile_process.py [--batch 64]

Instruction counts are repeatable (unlike wall time on a shared machine). The first request after a
load pays TensorFlow's executor creation (graph optimization); it is reported apart, since warmup
requests absorb it in production.

    .venv/bin/python benchmarks/profile_process.py --inline [--batch 64]

counts whole calls with the graph run in the calling thread on both sides (enable_inline_execute, and
the bare TF_SessionRun loop with inter_op_thread_pool = -1), so that TF's kernels are counted too, and
prints process()'s instructions per call against the bare loop's: a noise-free companion to the
wall-time ratio of make bench.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests"))
BENCH = ROOT / "build" / "cmake" / "bench" / "latency_bench"
FUNCTIONS = {
    "process (total)": r"process \[",
    "executor creation (first request only)": r"DirectSession::GetOrCreateExecutors",
    "TF_SessionRun (calling thread)": r"TF_SessionRun \[",
    "ParsePredictRequest": r"ParsePredictRequest",
    "BindInputs (checks + MakeTensor)": r"BindInputs",
    "MakeTensor": r"MakeTensor",
    "EncodePredictResponse": r"EncodePredictResponse",
    "RequestMetrics::Record": r"RequestMetrics::Record",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--inline", action="store_true",
                        help="whole calls, graph in the calling thread, process() against the bare TF loop")
    args = parser.parse_args()
    import processor
    import recommendation_model
    from lifecycle_helpers import serialize
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        subprocess.run([sys.executable, str(ROOT / "examples" / "recommendation_model.py"), str(work), "--steps", "3"],
                       check=True, capture_output=True, env=env)
        config = work / "config.json"
        config.write_text(json.dumps({"savedmodel_dir": str(work / "saved_model"),
                                      "checkpoint_dir": str(work / "checkpoints"), "poll_interval_seconds": 0}))
        request = work / "request.bin"
        request.write_bytes(serialize(recommendation_model.random_batch(args.batch, np.random.default_rng(0))))
        if args.inline:
            compare_inline(work, config, request, args, env)
            return
        out = work / "callgrind.out"
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--toggle-collect=process",
                        str(BENCH), "process", processor.library_path(), str(config), str(request),
                        str(args.iterations), "1", "0"], check=True, capture_output=True, env=env)
        annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(out)], check=True,
                                   capture_output=True, text=True).stdout
    calls = min(args.iterations, 200) + args.iterations  # warmup + measured (latency_bench)
    counts = {}
    for label, pattern in FUNCTIONS.items():
        match = next((line for line in annotated.splitlines() if re.search(pattern, line)), None)
        counts[label] = int(match.split()[0].replace(",", "")) if match else 0
    once = counts.pop("executor creation (first request only)")
    for label in ("process (total)", "TF_SessionRun (calling thread)"):  # both include the first request
        counts[label] -= once
    steady = counts["process (total)"]
    print(f"batch {args.batch}, {calls} calls; instructions per call on the calling thread")
    print(f"  {'executor creation (first request only)':<42} {once:>12,} once")
    for label, count in counts.items():
        if count:  # 0: inlined into its caller
            print(f"  {label:<42} {count // calls:>12,}  {100 * count / steady:5.1f} %")


def whole_call_instructions(command: list, toggle: str, out: Path, calls: int, env: dict) -> int:
    """Instructions per call of `toggle` (a latency_bench Call), executor creation excluded."""
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", f"--toggle-collect={toggle}",
                    *command], check=True, capture_output=True, env=env)
    annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(out)], check=True,
                               capture_output=True, text=True).stdout.splitlines()
    def count(pattern: str) -> int:
        line = next(line for line in annotated if re.search(pattern, line))
        return int(line.split()[0].replace(",", ""))
    return (count(r"PROGRAM TOTALS") - count(r"DirectSession::GetOrCreateExecutors")) // calls


def compare_inline(work: Path, config: Path, request: Path, args, env: dict) -> None:
    inline_config = work / "config_inline.json"
    inline_config.write_text(json.dumps({**json.loads(config.read_text()), "enable_inline_execute": True}))
    prefix = str(max((work / "checkpoints").glob("*.index"), key=lambda p: int(p.stem.split("-")[-1])))[:-len(".index")]
    calls = min(args.iterations, 200) + args.iterations
    common = [str(request), str(args.iterations), "1", "0"]
    import processor
    raw = whole_call_instructions([str(BENCH), "raw", str(work / "saved_model"), prefix, *common, "inline"],
                                  "*RawPath::Call*", work / "raw.out", calls, env)
    served = whole_call_instructions([str(BENCH), "process", processor.library_path(), str(inline_config), *common],
                                     "*ProcessPath::Call*", work / "process.out", calls, env)
    print(f"batch {args.batch}, graph in the calling thread; instructions per call, TF's kernels included")
    print(f"  {'bare TF_SessionRun loop':<28} {raw:>12,}")
    print(f"  {'process()':<28} {served:>12,}  {served / raw:.3f}x")


if __name__ == "__main__":
    main()
