"""TF Serving's gRPC Predict served by `python -m processor serve`, beside the transport's floor and the
library called from C, on this machine:

- echo floor: examples/grpc_host's Echo (C++ gRPC, Debian's libgrpc++: the request back, no model);
- Predict: `python -m processor serve --port`, TF Serving's PredictRequest of the example model
  (tensorflow-serving-api's messages, tf.make_tensor_proto as its clients build them), with the
  default config, with `enable_inline_execute` (ops in the gRPC thread, no handoff to TF's pool), and
  inline with TensorFlow's oneDNN kernels off (TF_ENABLE_ONEDNN_OPTS=0 in the server's environment);
- Predict of a one-op model (inline, no oneDNN): a SavedModel taking the same four inputs whose one
  output is `dense` through an Identity: the whole server's path (gRPC, routing, decoding, a TensorFlow
  run, encoding) with almost no model work, so that the rest of the example model's time is its graph's;
- process() from C: examples/c_host --bench on as many threads, the same model and rows, no network,
  with each of the three;
- process() with its caches cold (`latency_bench cold`, in make bench's build): the example and the
  one-op model inline without oneDNN, one thread, each call timed alone after writing 0 (a tight
  loop: warm caches), 2, 8 or 32 MB, as a server's network stack and kernel overwrite the caches
  between two requests; the difference between the two models, cold, is what the example model's
  graph costs in a server.

The gRPC sides are driven by the same C++ client (examples/grpc_host/grpc_load --raw: 8 connections,
one thread each, bytes sent and received unparsed), at batch 1 and 64; the sides alternate, order
swapped every round; medians over the rounds. Beside each gRPC side's rate, the server process's own
CPU time per request (from /proc: user + system), which client and server sharing two cores blur in
the rates. The time per request against the echo floor is each round's own ratio (the echo measured
in the same round), as a median and the rounds' range. Goal (issue 28): the server costs at most
1.5x the echo floor's time per request at batch 1, which the one-op model's Predict measures (a model's
own graph adds what its cold-cache process() costs, in this server or any other on TensorFlow).

    make bench      # or: .venv/bin/python benchmarks/tf_serving_grpc.py [--rounds R] [--seconds S]

Results: a table on stdout and benchmarks/results/tf_serving_grpc.json.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from embedding import alternate, c_host_bench, medians_of, parse_bench
from grpc_floor import CONNECTIONS, Server, build_host_and_model, missing_grpc_tools
from results_file import save_results
from timing import LATENCY_BENCH as BENCH

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests"))
COLD_MB = (0, 2, 8, 32)


PREDICT = "/tensorflow.serving.PredictionService/Predict"
NO_ONEDNN = {"TF_ENABLE_ONEDNN_OPTS": "0"}  # TensorFlow's own kernels (docs/performance.md#serving-settings)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (/proc/PID/stat, fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tf_serving_request(batch: dict, model_name: str) -> bytes:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    for name, value in batch.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request.SerializeToString()


def one_op_model(path: Path) -> Path:
    """A TF1 SavedModel at `path` with the example model's inputs (as its random_batch() gives them) and
    one output, `dense` through an Identity (no variables, no other op); returns `path`."""
    import tensorflow as tf
    import recommendation_model
    tf1 = tf.compat.v1
    sample = recommendation_model.random_batch(1, np.random.default_rng(0))
    graph = tf.Graph()
    with graph.as_default(), tf1.Session(graph=graph) as session:
        inputs = {name: tf1.placeholder(tf.string if value.dtype == object else tf.as_dtype(value.dtype),
                                        [None, *value.shape[1:]], name)
                  for name, value in sample.items()}
        outputs = {"dense_out": tf.identity(inputs["dense"], name="dense_out")}
        builder = tf1.saved_model.builder.SavedModelBuilder(str(path))
        builder.add_meta_graph_and_variables(session, [tf1.saved_model.tag_constants.SERVING], signature_def_map={
            "serving_default": tf1.saved_model.signature_def_utils.predict_signature_def(inputs, outputs)})
        builder.save()
    return path


def cold_process_us(configs: dict, request: Path) -> dict:
    """{model: {MB written before each call: process()'s median microseconds}} by latency_bench cold,
    with oneDNN off; empty (and a line saying why) without latency_bench."""
    import processor
    if not BENCH.exists():
        print(f"process() with cold caches: skipped, {BENCH} is missing (make bench builds it)")
        return {}
    result = {}
    for name, config in configs.items():
        done = subprocess.run([str(BENCH), "cold", processor.library_path(), str(config), str(request), "2000", "3",
                               *map(str, COLD_MB)], capture_output=True, text=True, env={**os.environ, **NO_ONEDNN},
                              check=True)
        result[name] = {int(mb): v["median_ms"] * 1e3 for mb, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    print("process() at batch 1, one thread, inline, no oneDNN, after writing MB of memory (us, median):")
    print(f"{'model':>16} " + " ".join(f"{f'{mb} MB':>8}" for mb in COLD_MB))
    for name, by_mb in result.items():
        print(f"{name:>16} " + " ".join(f"{by_mb[mb]:>8.1f}" for mb in COLD_MB))
    return result


class ModelServer:
    """`python -m processor serve` with gRPC alone on a free port, up once the port accepts."""

    def __init__(self, config: Path, log: Path, environment: dict = None):
        """`config`: a Processor config file; `environment`: variables for the server beside these."""
        from redis_servers import free_port
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = open(log, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "processor", "serve", "--config", str(config),
                                         "--model_name", "rec", "--port", str(self.port), "--rest_api_port", "0",
                                         "--threads", str(CONNECTIONS)],
                                        stdout=self.log, stderr=subprocess.STDOUT,
                                        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin", **(environment or {})})
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the model server exited (log: {log})")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the model server did not listen (log: {log})") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if missing_grpc_tools("tf_serving_grpc"):
        return
    from processor.server.grpc_api import grpc_available
    if grpc_available():
        print(f"tf_serving_grpc: skipped, {grpc_available()}")
        return
    import processor
    import recommendation_model
    from lifecycle_helpers import serialize

    report = {}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        out, settings = build_host_and_model(work)
        subprocess.run(["make", "-s", "-C", str(ROOT), "c_host"], check=True)
        config, inline = work / "config.json", work / "inline.json"
        config.write_text(json.dumps(settings))
        inline.write_text(json.dumps({**settings, "enable_inline_execute": True}))
        one_op = work / "one_op.json"
        one_op.write_text(json.dumps({"savedmodel_dir": str(one_op_model(work / "one_op")), "enable_inline_execute": True}))
        with contextlib.ExitStack() as servers:  # every server started is stopped, whatever fails
            echo_server = Server([str(out / "grpc_host"), processor.library_path(), str(config), "--address",
                                  "127.0.0.1:0", "--threads", str(CONNECTIONS)], work / "echo.log")
            servers.callback(echo_server.stop)
            model_server = ModelServer(config, work / "serve.log")
            servers.callback(model_server.stop)
            inline_server = ModelServer(inline, work / "serve_inline.log")
            servers.callback(inline_server.stop)
            no_onednn_server = ModelServer(inline, work / "serve_no_onednn.log", NO_ONEDNN)
            servers.callback(no_onednn_server.stop)
            one_op_server = ModelServer(one_op, work / "serve_one_op.log", NO_ONEDNN)
            servers.callback(one_op_server.stop)
            print(f"{'batch':>5} {'side':>36} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'time/request vs echo':>21} "
                  f"{'server CPU us/request':>22}")
            for batch_size in (1, 64):
                batch = recommendation_model.random_batch(batch_size, np.random.default_rng(batch_size))
                deeprec = work / f"deeprec_{batch_size}.bin"
                deeprec.write_bytes(serialize(batch))
                tfs = work / f"tf_serving_{batch_size}.bin"
                tfs.write_bytes(tf_serving_request(batch, "rec"))

                def grpc_side(server, request: Path, method: str):
                    """`server`: a Server or ModelServer (its address, process and log)."""
                    def measure():
                        before = process_cpu_seconds(server.process.pid)
                        done = subprocess.run([str(out / "grpc_load"), server.address, str(request),
                                               str(args.seconds), str(CONNECTIONS), "--raw", method],
                                              capture_output=True, text=True)
                        if done.returncode:
                            server.log.flush()
                            code = server.process.poll()
                            state = "runs" if code is None else f"exited with {code}"
                            raise RuntimeError(f"grpc_load {method}: {done.stderr.strip()[-500:]}; the server {state}, "
                                               f"its log ends: {Path(server.log.name).read_text()[-2000:]}")
                        result = parse_bench(done.stdout)
                        result["server_cpu_us_per_request"] = (process_cpu_seconds(server.process.pid) - before) * 1e6 / (
                            result["requests_per_s"] * args.seconds)
                        return result
                    return measure

                sides = {
                    "echo floor (C++ gRPC)": grpc_side(echo_server, deeprec, "/processor.Processor/Echo"),
                    "TF Serving Predict": grpc_side(model_server, tfs, PREDICT),
                    "Predict, inline": grpc_side(inline_server, tfs, PREDICT),
                    "Predict, inline, no oneDNN": grpc_side(no_onednn_server, tfs, PREDICT),
                    "Predict, one-op model": grpc_side(one_op_server, tfs, PREDICT),
                    "process() from C": lambda: c_host_bench(processor.library_path(), config, deeprec, args.seconds,
                                                             threads=CONNECTIONS),
                    "process() from C, inline": lambda: c_host_bench(processor.library_path(), inline, deeprec,
                                                                     args.seconds, threads=CONNECTIONS),
                    "process() from C, inline, no oneDNN": lambda: c_host_bench(
                        processor.library_path(), inline, deeprec, args.seconds, threads=CONNECTIONS,
                        environment=tuple(f"{k}={v}" for k, v in NO_ONEDNN.items())),
                }
                runs = alternate(args.rounds, sides)
                medians = medians_of(runs)
                floors = [r["requests_per_s"] for r in runs["echo floor (C++ gRPC)"]]
                for name, m in medians.items():
                    # Each round's ratio against the same round's echo: the machine's load drifts between
                    # rounds (the echo floor alone spans 14,000-23,000 req/s on this VM within an hour).
                    ratios = sorted(floor / r["requests_per_s"] for floor, r in zip(floors, runs[name]))
                    m["time_per_request_vs_echo"] = statistics.median(ratios)
                    m["time_per_request_vs_echo_range"] = [ratios[0], ratios[-1]]
                    server_cpu = m.get("server_cpu_us_per_request")
                    spread = f"{m['time_per_request_vs_echo']:.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"
                    print(f"{batch_size:>5} {name:>36} {m['requests_per_s']:>9.0f} {m['p50_ms']:>8.3f} "
                          f"{m['p99_ms']:>8.3f} {spread:>21} "
                          f"{'' if server_cpu is None else f'{server_cpu:.0f}':>22}", flush=True)
                report[f"batch {batch_size}"] = {"tf_serving_request_bytes": tfs.stat().st_size, **medians}
        report["process_us_after_writing_mb"] = cold_process_us(
            {"example model": inline, "one-op model": one_op}, work / "deeprec_1.bin")

    print(f"results: {save_results('tf_serving_grpc', report)}")


if __name__ == "__main__":
    main()
