"""What embedding costs a host, on the example model at batch 1, 64 and 512:

1. the shim: process() through libserving_processor.so (the engine loaded with RTLD_DEEPBIND,
   TensorFlow's malloc forwarded to the process's) against the engine dlopen()ed directly (no
   forwarding, no indirection), from the same plain C host (examples/c_host --bench, one thread);
2. a real RPC host: examples/grpc_host driven by examples/grpc_host/grpc_load (C++, one channel per
   connection) against process() called directly by c_host from as many threads, at 1 and 4 concurrent
   requests; gRPC's own round trip, GetModelInfo (which runs no model) on the same host; and c_host
   idling --idle-us between requests, as a server's threads do. With the default config and with
   enable_inline_execute. Client and server share this machine's cores, as they would not in production.

3. with --callgrind (needs valgrind): the instructions one batch-1 request executes, shim against
   engine, counted by callgrind in c_host's bench loop (enable_inline_execute, so that the whole request
   runs in that thread); exact where timings are noise. (Larger batches hand work to the intra-op pool
   and spin waiting for it, which makes their counts depend on timing.)

    make bench      # or: .venv/bin/python benchmarks/embedding.py [--rounds R] [--seconds S] [--callgrind]

Each comparison runs in separate processes, alternating (order swapped every round) so that both
sides see the same machine; the medians over the rounds are reported with their ratio.
Results: tables on stdout and benchmarks/results/embedding.json.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from performance import build_model
from results_file import save_results

ROOT = Path(__file__).resolve().parents[1]
C_HOST = ROOT / "examples" / "c_host" / "c_host"
GRPC_EXAMPLE = ROOT / "examples" / "grpc_host"
sys.path.insert(0, str(ROOT / "examples"))
BENCH_LINE = re.compile(r"(\d+) requests/s, p50 ([\d.]+) ms, p99 ([\d.]+) ms, max [\d.]+ ms(?:, mean ([\d.]+) ms)?")
LIBRARY_LINE = re.compile(r"library: mean ([\d.]+) ms")
QUIET = ["env", "-i", "TF_CPP_MIN_LOG_LEVEL=3"]


def parse_bench(out: str) -> dict:
    """c_host --bench's or grpc_load's line; `process_ms`: the mean time in process(), as c_host timed
    its calls or as the library's own metrics say (grpc_load's Predict runs)."""
    rate, p50, p99, mean = BENCH_LINE.search(out).groups()
    result = {"requests_per_s": float(rate), "p50_ms": float(p50), "p99_ms": float(p99)}
    library = LIBRARY_LINE.search(out)
    if library or mean:
        result["process_ms"] = float(library.group(1) if library else mean)
    return result


def c_host_bench(library: str, config: Path, request: Path, seconds: float, threads: int = 1, idle_us: int = 0,
                 environment: tuple = ()) -> dict:
    """`environment`: NAME=value strings for the host beside QUIET's."""
    return parse_bench(subprocess.run([*QUIET, *environment, str(C_HOST), library, str(config), "--bench", str(request),
                                       str(seconds), str(threads), str(idle_us)],
                                      capture_output=True, text=True, check=True).stdout)


def medians_of(runs: dict) -> dict:
    return {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}


def alternate(rounds: int, sides: dict) -> dict:
    """Runs every side (name -> callable returning a measurement) once per round, order swapped every round."""
    runs = {name: [] for name in sides}
    for round_index in range(rounds):
        for name in (list(sides) if round_index % 2 == 0 else list(reversed(sides))):
            runs[name].append(sides[name]())
    return runs


def print_row(label: str, name: str, m: dict) -> None:
    process = f"{m['process_ms']:>11.3f}" if "process_ms" in m else ""
    print(f"{label:>12} {name:>7} {m['requests_per_s']:>9,.0f} {m['p50_ms']:>8.3f} {m['p99_ms']:>8.3f}{process}")


def shim_against_engine(args, config: Path, requests: dict) -> dict:
    import processor
    libraries = {"shim": processor.library_path(),
                 "engine": str(Path(processor.library_path()).with_name("libserving_processor_engine.so"))}
    print(f"{'batch':>12} {'path':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'process ms':>10}")
    report = {}
    for batch, request in requests.items():
        runs = alternate(args.rounds, {name: (lambda lib=lib: c_host_bench(lib, config, request, args.seconds))
                                       for name, lib in libraries.items()})
        medians = medians_of(runs)
        for name, m in medians.items():
            print_row(str(batch), name, m)
        ratio = medians["shim"]["p50_ms"] / medians["engine"]["p50_ms"]
        print(f"{batch:>12}  p50 shim / engine = {ratio:.3f}")
        report[str(batch)] = {"medians": medians, "runs": runs, "p50_ratio": ratio}
    return report


def instructions_per_request(library: str, config: Path, request: Path, work: Path) -> float:
    out = work / "callgrind.out"
    run = subprocess.run([*QUIET, "valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=bench_loop",
                          f"--callgrind-out-file={out}", str(C_HOST), library, str(config), "--bench", str(request),
                          "10", "1"], capture_output=True, text=True, check=True)
    requests = int(re.search(r"bench: (\d+) requests", run.stdout).group(1))
    instructions = int(re.search(r"I\s+refs:\s+([\d,]+)", run.stderr).group(1).replace(",", ""))
    return instructions / requests


def shim_against_engine_in_instructions(work: Path, config: Path, requests: dict) -> dict:
    if not shutil.which("valgrind"):
        print("callgrind: skipped, valgrind is not installed (apt-get install valgrind)")
        return {"skipped": "valgrind is not installed"}
    import processor
    inline = work / "inline.json"
    inline.write_text(json.dumps({**json.loads(config.read_text()), "enable_inline_execute": True}))
    libraries = {"shim": processor.library_path(),
                 "engine": str(Path(processor.library_path()).with_name("libserving_processor_engine.so"))}
    print(f"{'batch':>12} {'shim instr/request':>19} {'engine':>10} {'shim - engine':>14} {'ratio':>6}")
    report = {}
    for batch in (1,):
        counts = {name: instructions_per_request(lib, inline, requests[batch], work) for name, lib in libraries.items()}
        difference = counts["shim"] - counts["engine"]
        print(f"{batch:>12} {counts['shim']:>19,.0f} {counts['engine']:>10,.0f} {difference:>14,.0f} "
              f"{counts['shim'] / counts['engine']:>6.3f}")
        report[str(batch)] = {**counts, "difference": difference}
    return report


def grpc_against_c(args, work: Path, config: Path, requests: dict) -> dict:
    missing = [t for t in ("protoc", "grpc_cpp_plugin", "pkg-config") if not shutil.which(t)]
    if missing:
        print(f"gRPC host: skipped, {', '.join(missing)} missing "
              "(apt-get install libgrpc++-dev protobuf-compiler-grpc)")
        return {"skipped": f"{', '.join(missing)} missing"}
    import processor
    sys.path.insert(0, str(ROOT / "tests"))
    from host_processes import HostProcess
    out = work / "grpc"
    subprocess.run(["make", "-s", "-j2", "-C", str(GRPC_EXAMPLE), f"OUT={out}",
                    f"PROCESSOR_INCLUDE={processor.include_dir()}", "load"], check=True)
    report = {}
    print(f"{'batch x conc':>12} {'path':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'process ms':>10}")
    for setting, overrides in (("default", {}), ("inline", {"enable_inline_execute": True})):
        print(f"config: {setting} {json.dumps(overrides)}")
        variant = work / setting
        variant.mkdir()
        settings = {**json.loads(config.read_text()), **overrides}
        (variant / "config.json").write_text(json.dumps(settings))
        host = HostProcess([str(out / "grpc_host")], settings, variant, ("--threads", "8"))
        try:
            for batch, request in requests.items():
                for concurrency in (1, 4):
                    def grpc(request=request, concurrency=concurrency, *method):
                        return parse_bench(subprocess.run([str(out / "grpc_load"), host.address, str(request),
                                                           str(args.seconds), str(concurrency), *method],
                                                          capture_output=True, text=True, check=True).stdout)

                    def direct(request=request, concurrency=concurrency, idle_us=0):
                        return c_host_bench(processor.library_path(), variant / "config.json", request, args.seconds,
                                            concurrency, idle_us)

                    runs = alternate(min(args.rounds, 3), {
                        "gRPC": grpc, "C": direct, "C idle": lambda: direct(request, concurrency, args.idle_us),
                        "RTT": lambda: grpc(request, concurrency, "--model-info")})
                    medians = medians_of(runs)
                    label = f"{batch} x {concurrency}"
                    for name, m in medians.items():
                        print_row(label, name, m)
                    ratios = {key: medians["gRPC"][key] / medians["C"][key] for key in medians["C"]}
                    idle = medians["C idle"]["process_ms"] / medians["C"]["process_ms"]
                    print(f"{label:>12}  gRPC / C: req/s {ratios['requests_per_s']:.2f}, p50 {ratios['p50_ms']:.2f}, "
                          f"p99 {ratios['p99_ms']:.2f}, process() {ratios['process_ms']:.2f}; "
                          f"process() idle / busy C {idle:.2f}")
                    report[f"{setting} {label}"] = {"medians": medians, "runs": runs, "ratios": ratios}
        finally:
            code, _, _ = host.stop()
            host.kill()
            assert code == 0, host.stderr()[-2000:]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--idle-us", type=int, default=250, help="C idle: sleep between requests, as the gRPC host's "
                        "threads wait for the network (its round trip here)")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions per request (valgrind)")
    args = parser.parse_args()
    import recommendation_model
    from processor import predict_pb2, tensors
    report = {"rounds": args.rounds, "seconds": args.seconds}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        model = build_model(work / "model", 5000)
        config = work / "config.json"
        config.write_text(json.dumps({"savedmodel_dir": model["savedmodel"], "checkpoint_dir": model["checkpoints"],
                                      "poll_interval_seconds": 0}))
        requests = {}
        for batch in (1, 64, 512):
            request = predict_pb2.PredictRequest()
            for name, value in recommendation_model.random_batch(batch, np.random.default_rng(batch)).items():
                tensors.to_array_proto(np.asarray(value), request.inputs[name])
            requests[batch] = work / f"request-{batch}.bin"
            requests[batch].write_bytes(request.SerializeToString())
        report["shim_against_engine"] = shim_against_engine(args, config, requests)
        report["grpc_host_against_c"] = grpc_against_c(args, work, config, requests)
        if args.callgrind:
            report["instructions"] = shim_against_engine_in_instructions(work, config, requests)
    print(f"saved {save_results('embedding', report)}")


if __name__ == "__main__":
    main()
