"""The gRPC transport's floor on this machine: an echo service (the request back, no model) served by
C++ gRPC (Debian's libgrpc++, examples/grpc_host's Echo) and by Python grpcio (a synchronous server
on a thread pool, and grpc.aio), each driven by the same C++ client (examples/grpc_host/grpc_load
--echo: 8 connections, one thread each) with the example model's batch-1 and batch-64 requests.

    make bench      # or: .venv/bin/python benchmarks/grpc_floor.py [--rounds R] [--seconds S]

It decides where a TF Serving gRPC server is served from: a stack whose floor costs more than 2x
the C++ floor's time per request is not a base for a server whose goal is 1.5x of the floor. The
servers alternate, order swapped every round; medians over the rounds. Results: a table on stdout and
benchmarks/results/grpc_floor.json.

    python benchmarks/grpc_floor.py --python-echo sync|aio    # one Python echo server (used by the above)
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Tuple

import numpy as np

from embedding import GRPC_EXAMPLE, alternate, medians_of, parse_bench
from results_file import save_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests"))
CONNECTIONS = 8
ECHO_METHOD = "Echo"


def python_echo(kind: str, threads: int = CONNECTIONS) -> None:
    """Serves processor.Processor/Echo with grpcio on a free port, the bytes back unparsed (the most a
    Python server can skip), and prints "listening on 127.0.0.1:PORT"."""
    import grpc
    if kind == "sync":
        handler = grpc.method_handlers_generic_handler("processor.Processor", {
            ECHO_METHOD: grpc.unary_unary_rpc_method_handler(lambda request, context: request)})
        from concurrent.futures import ThreadPoolExecutor
        server = grpc.server(ThreadPoolExecutor(max_workers=threads))
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        print(f"listening on 127.0.0.1:{port}", flush=True)
        server.wait_for_termination()
        return
    import asyncio

    async def serve() -> None:
        async_handler = grpc.method_handlers_generic_handler("processor.Processor", {
            ECHO_METHOD: grpc.unary_unary_rpc_method_handler(_async_echo)})
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((async_handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"listening on 127.0.0.1:{port}", flush=True)
        await server.wait_for_termination()

    asyncio.run(serve())


async def _async_echo(request, context):
    return request


class Server:
    """A server process that prints "listening on HOST:PORT" first."""

    def __init__(self, command: list, log: Path):
        self.log = open(log, "w")
        self.process = subprocess.Popen(["env", "-i", "TF_CPP_MIN_LOG_LEVEL=3", *command], stdout=subprocess.PIPE,
                                        stderr=self.log, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"{command[0]} did not start: {line!r} (log: {log})")
        self.address = line.split()[-1]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.log.close()


def missing_grpc_tools(benchmark: str) -> bool:
    """Says so (and returns True) when the gRPC host cannot be built here."""
    missing = [t for t in ("protoc", "grpc_cpp_plugin", "pkg-config") if not shutil.which(t)]
    if missing:
        print(f"{benchmark}: skipped, {', '.join(missing)} missing (apt-get install libgrpc++-dev protobuf-compiler-grpc)")
    return bool(missing)


def build_host_and_model(work: Path) -> Tuple[Path, dict]:
    """examples/grpc_host's host and load client built into work/grpc, and the example model trained
    into work/rec: (the build directory, the model's config without polling)."""
    import processor
    import recommendation_model
    out = work / "grpc"
    subprocess.run(["make", "-s", "-j2", "-C", str(GRPC_EXAMPLE), f"OUT={out}",
                    f"PROCESSOR_INCLUDE={processor.include_dir()}", "load"], check=True)
    dirs, trainer = recommendation_model.build(str(work / "rec"), steps_per_version=1, versions=1)
    trainer.close()
    return out, {"savedmodel_dir": dirs.savedmodel_dir, "checkpoint_dir": dirs.checkpoint_dir,
                 "poll_interval_seconds": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--python-echo", choices=("sync", "aio"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.python_echo:
        return python_echo(args.python_echo)
    if missing_grpc_tools("grpc_floor"):
        return
    import processor
    import recommendation_model
    from lifecycle_helpers import serialize

    report = {}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        out, settings = build_host_and_model(work)
        config = work / "config.json"
        config.write_text(json.dumps(settings))
        python = [sys.executable, str(Path(__file__).resolve())]
        servers = {
            "C++ gRPC": Server([str(out / "grpc_host"), processor.library_path(), str(config), "--address",
                                "127.0.0.1:0", "--threads", str(CONNECTIONS)], work / "cpp.log"),
            "grpcio (sync, 8 threads)": Server([*python, "--python-echo", "sync"], work / "sync.log"),
            "grpcio (aio)": Server([*python, "--python-echo", "aio"], work / "aio.log"),
        }
        try:
            print(f"{'batch':>5} {'server':>26} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'time/request vs C++':>20}")
            for batch in (1, 64):
                request = work / f"request_{batch}.bin"
                request.write_bytes(serialize(recommendation_model.random_batch(batch, np.random.default_rng(batch))))

                def echo(server):
                    def measure():
                        done = subprocess.run([str(out / "grpc_load"), server.address, str(request), str(args.seconds),
                                               str(CONNECTIONS), "--echo"], capture_output=True, text=True)
                        result = parse_bench(done.stdout)
                        result["errors"] = float(done.stdout.rsplit(", ", 1)[-1].split()[0]) if done.returncode else 0.0
                        if done.returncode:  # reported, not hidden: a floor with errors is not a floor
                            print(f"  {server.address}: {done.stderr.strip().splitlines()[0]}", flush=True)
                        return result
                    return measure

                runs = alternate(args.rounds, {name: echo(server) for name, server in servers.items()})
                medians = medians_of(runs)
                floor = medians["C++ gRPC"]["requests_per_s"]
                for name, m in medians.items():
                    m["time_per_request_vs_cpp"] = floor / m["requests_per_s"]
                    print(f"{batch:>5} {name:>26} {m['requests_per_s']:>9.0f} {m['p50_ms']:>8.3f} {m['p99_ms']:>8.3f} "
                          f"{m['time_per_request_vs_cpp']:>19.2f}x" +
                          (f" ({sum(r['errors'] for r in runs[name]):.0f} errors)" if any(r['errors'] for r in runs[name])
                           else ""), flush=True)
                report[f"batch {batch}"] = {"bytes": request.stat().st_size, **medians}
        finally:
            for server in servers.values():
                server.stop()
    print(f"results: {save_results('grpc_floor', report)}")


if __name__ == "__main__":
    main()
