"""Where process() spends its instructions: callgrind over a C host calling process(), counted only
inside process() on the calling thread (TF's inter-op threads run the kernels; they are not counted).

    make profile        # or: .venv/bin/python benchmarks/profile_process.py [--batch 64]

Instruction counts are repeatable (unlike wall time on a shared machine). process() runs the model
through TensorFlow's callable interface, whose executors (graph optimization) are made at load; when
a run does create executors inside process() (TF_SessionRun's first run of a set of ports), that is
reported apart, since warmup requests absorb it in production.

    .venv/bin/python benchmarks/profile_process.py --inline [--batch 64]

counts whole calls with the graph run in the calling thread on both sides (enable_inline_execute, and
the bare loops with inter_op_thread_pool = -1), so that TF's kernels are counted too, and prints
process()'s instructions per call against two bare loops': TF_SessionRun (the C API's limit) and
Session::RunCallable (the C++ API's, which process() uses). It is a far steadier companion to the
wall-time ratio of make bench, though not an exact one: TF's ParallelFor splits a kernel's work
between the calling thread and its intra-op threads differently from run to run, so counts move by a
few percent between runs (batch 1, run alone, before callables: bare loop 124,600-128,400, process() 132,900-133,300),
and much more when another process competes for the cores. Run it alone, and more than once.
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

from timing import LATENCY_BENCH as BENCH

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests"))
EXECUTOR = "executor creation (first run only)"
FUNCTIONS = {
    "process (total)": r"process \[",
    EXECUTOR: r"DirectSession::(GetOr)?CreateExecutors",
    "CallableRunner::Run (tensor handoff + TF's run)": r"CallableRunner::Run\(",
    "TF's run (calling thread)": r"DirectSession::Run(Callable)?\(",
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
        annotated = callgrind_inclusive([str(BENCH), "process", processor.library_path(), str(config), str(request),
                                         str(args.iterations), "1", "0"], "process", work / "callgrind.out", env)
    calls = calls_made(args)
    counts = {label: inclusive_count(annotated, pattern) for label, pattern in FUNCTIONS.items()}
    once = counts.pop(EXECUTOR)
    for label in ("process (total)", "TF's run (calling thread)"):  # both include any executor creation
        counts[label] -= once
    steady = counts["process (total)"]
    print(f"batch {args.batch}, {calls} calls; instructions per call on the calling thread")
    if once:
        print(f"  {EXECUTOR:<48} {once:>12,} once")
    for label, count in counts.items():
        if count:  # 0: inlined into its caller
            print(f"  {label:<48} {count // calls:>12,}  {100 * count / steady:5.1f} %")


def callgrind_inclusive(command: list, toggle: str, out: Path, env: dict) -> list:
    """callgrind_annotate's inclusive lines for `command`, counting only inside functions matching `toggle`."""
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", f"--toggle-collect={toggle}",
                    *command], check=True, capture_output=True, env=env)
    # --threshold=100: every function, not only those making up 99 % of the count (at batch 1 the
    # first request's executor creation would leave out the parse and the encoder)
    return subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(out)], check=True,
                          capture_output=True, text=True).stdout.splitlines()


def inclusive_count(annotated: list, pattern: str) -> int:
    """The first matching line's instructions; 0 when none matches (the function was inlined)."""
    match = next((line for line in annotated if re.search(pattern, line)), None)
    return int(match.split()[0].replace(",", "")) if match else 0


def calls_made(args) -> int:
    return min(args.iterations, 200) + args.iterations  # warmup + measured (latency_bench)


def whole_call_instructions(command: list, toggle: str, out: Path, calls: int, env: dict) -> int:
    """Instructions per call of `toggle` (a latency_bench Call), executor creation excluded."""
    annotated = callgrind_inclusive(command, toggle, out, env)
    return (inclusive_count(annotated, r"PROGRAM TOTALS") - inclusive_count(annotated, FUNCTIONS[EXECUTOR])) // calls


def compare_inline(work: Path, config: Path, request: Path, args, env: dict) -> None:
    inline_config = work / "config_inline.json"
    inline_config.write_text(json.dumps({**json.loads(config.read_text()), "enable_inline_execute": True}))
    prefix = str(max((work / "checkpoints").glob("*.index"), key=lambda p: int(p.stem.split("-")[-1])))[:-len(".index")]
    calls = calls_made(args)
    common = [str(request), str(args.iterations), "1", "0"]
    import processor
    raw_command = [str(BENCH), "raw", str(work / "saved_model"), prefix, *common, "inline"]
    raw = whole_call_instructions(raw_command, "*RawPath::Call*", work / "raw.out", calls, env)
    callable_raw = whole_call_instructions([*raw_command, "callable"], "*RawPath::Call*", work / "callable.out",
                                           calls, env)
    served = whole_call_instructions([str(BENCH), "process", processor.library_path(), str(inline_config), *common],
                                     "*ProcessPath::Call*", work / "process.out", calls, env)
    print(f"batch {args.batch}, graph in the calling thread; instructions per call, TF's kernels included")
    print(f"  {'bare TF_SessionRun loop':<28} {raw:>12,}")
    print(f"  {'bare RunCallable loop':<28} {callable_raw:>12,}  {callable_raw / raw:.3f}x")
    print(f"  {'process()':<28} {served:>12,}  {served / raw:.3f}x  ({served / callable_raw:.3f}x RunCallable)")


if __name__ == "__main__":
    main()
