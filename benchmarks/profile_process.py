"""Where process() spends its instructions: callgrind over a C host calling process(), counted only
inside process() on the calling thread (TF's inter-op threads run the kernels; they are not counted).

    make profile        # or: .venv/bin/python benchmarks/profile_process.py [--batch 64]

Instruction counts are repeatable (unlike wall time on a shared machine). The first request after a
load pays TensorFlow's executor creation (graph optimization); it is reported apart, since warmup
requests absorb it in production.
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


if __name__ == "__main__":
    main()
