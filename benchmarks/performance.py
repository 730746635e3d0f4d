"""Processor against TensorFlow, side by side in one run: latency at batch 1, 64, 512 on the example
model and on a 1,000,000-row embedding model, and throughput with 1 and 2 threads.

    make bench      # or: .venv/bin/python benchmarks/performance.py [--iterations N] [--rounds R]

Paths (same SavedModel, same checkpoint, same request):
  raw_tf_session_run   a bare TF_SessionRun loop from C on prebuilt tensors: the physical limit
  process_c            process() from a C host (dlopen, initialize): decode, run, encode
  processor_process    Processor.process(bytes) from Python (GIL released)
  processor_predict    Processor.predict(numpy) from Python (protobuf built and parsed in Python)
  tf1_session_run      tf.compat.v1 Session.run with a feed_dict
  tf2_signature        tf.saved_model.load(...).signatures["serving_default"]
The machine is noisy (2 cores, shared): every path runs in each of R interleaved rounds and the median
of the rounds is reported. raw_tf_session_run and process_c run in one process, alternating in blocks
(`latency_bench compare`), so their ratio is not skewed by one process drawing a slower core or a busier
neighbour: that ratio is reported apart, once with TF's inter-op pools and once with both sides running
the graph in the calling thread (`enable_inline_execute`: steadier, as no thread handoff is timed),
and against a bare loop that also decodes each request into its input tensors and encodes the
outputs with this project's codec (`compare ... decoding`), with the pools and inline: what the
serving machinery (checks, version lookup, metrics, buffers) costs on top of the codec. Through the
pools that comparison also shows what the plain bare loop hides: calls back to back keep TF's
inter-op threads spinning, and any work between runs lets them fall asleep.
The codec's own wall time is measured in the same way (`latency_bench codec`): parsing the request,
parsing it and writing its values into the input tensors, and encoding the outputs, each in a loop,
against the bare inline run: the share of the bare run that decoding and encoding alone add, a floor
under the process_c / raw ratio.
process() runs the model through TensorFlow's callable interface (Session::RunCallable), which the C
API lacks; inline, it is also compared with a bare RunCallable loop (`compare ... inline callable`):
the limit of TensorFlow's C++ API, below the C API's TF_SessionRun.
A third model has 300 float inputs and nothing else (tests/model_builders.py build_wide_model), as
recommendation models with hundreds of features have: there the cost per input shows, TensorFlow's in
the bare loop and ours in process(). It runs the inline comparisons and the codec alone.
Results: a table on stdout and benchmarks/results/performance.json.
Targets: process_c <= 1.05x raw; tf2_signature >= 4x process_c at batch 1; 2 threads >= 1.8x one.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from results_file import save_results
from timing import LATENCY_BENCH as BENCH, measure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests"))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT / "examples")}


def build_model(directory: Path, num_items: int) -> dict:
    subprocess.run([sys.executable, str(ROOT / "examples" / "recommendation_model.py"), str(directory),
                    "--num-items", str(num_items), "--steps", "3"], check=True, env=ENV, capture_output=True)
    checkpoints = directory / "checkpoints"
    prefix = sorted((p[:-6] for p in os.listdir(checkpoints) if p.endswith(".index")),
                    key=lambda p: int(p.rsplit("-", 1)[1]))[-1]
    return {"savedmodel": str(directory / "saved_model"), "checkpoints": str(checkpoints),
            "prefix": str(checkpoints / prefix), "num_items": num_items}


def native(mode: str, model: dict, config_path: Path, request: Path, iterations: int, threads: int, seconds: float):
    args = ([model["savedmodel"], model["prefix"]] if mode == "raw" else
            [str(Path(__import__("processor").library_path())), str(config_path)])
    out = subprocess.run([str(BENCH), mode, *args, str(request), str(iterations), str(threads), str(seconds)],
                         check=True, capture_output=True, text=True, env=ENV).stdout
    return json.loads(out.strip().splitlines()[-1])


def compare(model: dict, config_path: Path, request: Path, iterations: int, rounds: int, run_inline: bool = False,
            decoding: bool = False, use_callable: bool = False) -> dict:
    """raw_tf_session_run and process_c interleaved in one process (see latency_bench.cc); with
    run_inline, both run the graph in the calling thread (config_path must set enable_inline_execute);
    with decoding, the bare loop also decodes the request and encodes the response at every call; with
    use_callable, the bare loop runs through Session::RunCallable instead of TF_SessionRun."""
    out = subprocess.run([str(BENCH), "compare", str(Path(__import__("processor").library_path())), str(config_path),
                          model["savedmodel"], model["prefix"], str(request), str(iterations), str(rounds)] +
                         (["inline"] if run_inline else []) + (["decoding"] if decoding else []) +
                         (["callable"] if use_callable else []),
                         check=True, capture_output=True, text=True, env=ENV).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return {"raw_tf_session_run": result["raw"], "process_c": result["process"], "process_ratio": result["ratio"]}


def codec(model: dict, request: Path, iterations: int) -> dict:
    """The codec's stages timed alone, and the bare inline run they are added to (latency_bench codec)."""
    out = subprocess.run([str(BENCH), "codec", model["savedmodel"], model["prefix"], str(request), str(iterations),
                          "inline"], check=True, capture_output=True, text=True, env=ENV).stdout
    return json.loads(out.strip().splitlines()[-1])


def wide_request_rounds(work: Path, args, report: dict, features: int = 300) -> None:
    """process() against the bare loop on a model of `features` float inputs, inline, plain and
    decoding too, and the codec alone, at batch 1, 64 and 512."""
    from model_builders import build_wide_model
    from processor import predict_pb2, tensors
    model = {"savedmodel": build_wide_model(str(work / "wide"), features), "prefix": ""}
    config_path = work / "wide_inline.json"
    config_path.write_text(json.dumps({"savedmodel_dir": model["savedmodel"], "enable_inline_execute": True}))
    rng = np.random.default_rng(features)
    for batch_size in (1, 64, 512):
        request = predict_pb2.PredictRequest()
        for i in rng.permutation(features):
            tensors.to_array_proto(rng.standard_normal(batch_size).astype(np.float32), request.inputs[f"feature_{i}"])
        request_path = work / f"wide_{batch_size}.bin"
        request_path.write_bytes(request.SerializeToString())
        iterations = max(200, args.iterations // (4 if batch_size == 512 else 1))
        plain, callable_plain, decoding, stages = [], [], [], []
        for _ in range(args.rounds):
            plain.append(compare(model, config_path, request_path, iterations // 4, 8, run_inline=True))
            callable_plain.append(compare(model, config_path, request_path, iterations // 4, 8, run_inline=True,
                                          use_callable=True))
            decoding.append(compare(model, config_path, request_path, iterations // 4, 8, run_inline=True, decoding=True))
            stages.append(codec(model, request_path, iterations))
        stage = {name: statistics.median(r[name]["median_ms"] for r in stages) for name in ("decode", "encode", "raw")}
        report["wide"].append({
            "features": features, "batch": batch_size,
            "ratio_inline": statistics.median(r["process_ratio"] for r in plain),
            "ratio_inline_to_callable_raw": statistics.median(r["process_ratio"] for r in callable_plain),
            "ratio_inline_to_decoding_raw": statistics.median(r["process_ratio"] for r in decoding),
            "raw_inline_ms": statistics.median(r["raw_tf_session_run"]["median_ms"] for r in plain),
            "process_inline_ms": statistics.median(r["process_c"]["median_ms"] for r in plain),
            "codec_share": (stage["decode"] + stage["encode"]) / stage["raw"]})


def python_paths(processor_module, config: dict, request_bytes: bytes, batch: dict, iterations: int) -> dict:
    with processor_module.Processor(config) as p:
        return {"processor_process": measure(lambda: p.process(request_bytes), iterations),
                "processor_predict": measure(lambda: p.predict(batch), iterations)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per throughput measurement")
    args = parser.parse_args()
    if not BENCH.exists():
        sys.exit(f"{BENCH} is missing: run `make bench`")
    import processor
    import recommendation_model
    from lifecycle_helpers import serialize

    report = {"latency": [], "process_to_raw": [], "codec": [], "throughput": [], "wide": []}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        models = {"example (5k items)": build_model(work / "small", recommendation_model.NUM_ITEMS),
                  "1M-row embedding": build_model(work / "big", 1_000_000)}
        for model_name, model in models.items():
            config = {"savedmodel_dir": model["savedmodel"], "checkpoint_dir": model["checkpoints"],
                      "poll_interval_seconds": 0}
            config_path = work / f"{model['num_items']}.json"
            config_path.write_text(json.dumps(config))
            inline_config_path = work / f"{model['num_items']}_inline.json"
            inline_config_path.write_text(json.dumps({**config, "enable_inline_execute": True}))
            for batch_size in (1, 64, 512):
                batch = recommendation_model.random_batch(batch_size, np.random.default_rng(batch_size))
                request_path = work / f"request_{batch_size}.bin"
                request_path.write_bytes(serialize(batch))
                rounds, ratios, inline_rows, callable_rows, decoding_rows, codec_rows, pools_decoding = (
                    [], [], [], [], [], [], [])
                for _ in range(args.rounds):
                    codec_rows.append(codec(model, request_path, args.iterations))
                    row = compare(model, config_path, request_path, args.iterations // 4, 8)
                    ratio = row.pop("process_ratio")
                    pools_decoding.append(compare(model, config_path, request_path, args.iterations // 4, 8,
                                                  decoding=True)["process_ratio"])
                    inline_rows.append(compare(model, inline_config_path, request_path, args.iterations // 4, 8,
                                               run_inline=True))
                    callable_rows.append(compare(model, inline_config_path, request_path, args.iterations // 4, 8,
                                                 run_inline=True, use_callable=True))
                    decoding_rows.append(compare(model, inline_config_path, request_path, args.iterations // 4, 8,
                                                 run_inline=True, decoding=True))
                    row.update(python_paths(processor, config, request_path.read_bytes(), batch, args.iterations))
                    tf = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tf_baselines.py"), model["savedmodel"],
                                         model["prefix"], str(request_path), str(args.iterations)],
                                        check=True, capture_output=True, text=True, env=ENV)
                    row.update(json.loads(tf.stdout.strip().splitlines()[-1]))
                    rounds.append(row)
                    ratios.append(ratio)
                report["process_to_raw"].append({
                    "model": model_name, "batch": batch_size, "ratio": statistics.median(ratios),
                    "ratio_to_decoding_raw": statistics.median(pools_decoding),
                    "ratio_inline": statistics.median(r["process_ratio"] for r in inline_rows),
                    "ratio_inline_to_callable_raw": statistics.median(r["process_ratio"] for r in callable_rows),
                    "ratio_inline_to_decoding_raw": statistics.median(r["process_ratio"] for r in decoding_rows),
                    "raw_inline_ms": statistics.median(r["raw_tf_session_run"]["median_ms"] for r in inline_rows),
                    "process_inline_ms": statistics.median(r["process_c"]["median_ms"] for r in inline_rows)})
                stage = {name: 1000 * statistics.median(r[name]["median_ms"] for r in codec_rows)
                         for name in ("parse", "decode", "encode", "raw")}
                report["codec"].append({"model": model_name, "batch": batch_size, "parse_us": stage["parse"],
                                        "decode_us": stage["decode"], "encode_us": stage["encode"],
                                        "raw_inline_us": stage["raw"],
                                        "codec_share": (stage["decode"] + stage["encode"]) / stage["raw"]})
                for path in rounds[0]:
                    report["latency"].append({
                        "model": model_name, "batch": batch_size, "path": path,
                        "median_ms": statistics.median(r[path]["median_ms"] for r in rounds),
                        "p99_ms": statistics.median(r[path]["p99_ms"] for r in rounds)})
            request_path = work / "request_64.bin"
            request_path.write_bytes(serialize(recommendation_model.random_batch(64, np.random.default_rng(64))))
            for path, session_num in (("raw_tf_session_run", 1), ("process_c", 1), ("process_c", 2)):
                config_path.write_text(json.dumps({**config, "session_num": session_num}))
                for threads in (1, 2):
                    rates = [native("raw" if path.startswith("raw") else "process", model, config_path, request_path, 200,
                                    threads, args.seconds)["requests_per_s"] for _ in range(args.rounds)]
                    report["throughput"].append({"model": model_name, "batch": 64, "path": path, "session_num": session_num,
                                                 "threads": threads, "requests_per_s": statistics.median(rates)})

        wide_request_rounds(work, args, report)

    print(f"{'model':<20} {'batch':>5} {'path':<20} {'median ms':>10} {'p99 ms':>8} {'/ raw':>7}")
    raw = {(r["model"], r["batch"]): r["median_ms"] for r in report["latency"] if r["path"] == "raw_tf_session_run"}
    for r in report["latency"]:
        r["ratio_to_raw"] = r["median_ms"] / raw[(r["model"], r["batch"])]
        print(f"{r['model']:<20} {r['batch']:>5} {r['path']:<20} {r['median_ms']:>10.4f} {r['p99_ms']:>8.4f} {r['ratio_to_raw']:>6.2f}x")
    print(f"\n{'process_c / raw, interleaved in one process':<26} {'pools':>7} {'inline':>7} "
          f"{'/ RunCallable inline':>21} {'raw inline ms':>14} {'process inline ms':>18} "
          f"{'/ raw decoding too: pools':>26} {'inline':>7}")
    for r in report["process_to_raw"]:
        print(f"{r['model']:<20} {r['batch']:>5} {r['ratio']:>6.2f}x {r['ratio_inline']:>6.2f}x "
              f"{r['ratio_inline_to_callable_raw']:>20.3f}x "
              f"{r['raw_inline_ms']:>14.4f} {r['process_inline_ms']:>18.4f} {r['ratio_to_decoding_raw']:>25.3f}x "
              f"{r['ratio_inline_to_decoding_raw']:>6.3f}x")
    print(f"\n{'the codec alone (µs)':<26} {'parse':>7} {'decode':>7} {'encode':>7} {'raw inline':>11} "
          f"{'codec / raw':>12}")
    for r in report["codec"]:
        print(f"{r['model']:<20} {r['batch']:>5} {r['parse_us']:>7.2f} {r['decode_us']:>7.2f} {r['encode_us']:>7.2f} "
              f"{r['raw_inline_us']:>11.1f} {100 * r['codec_share']:>11.1f}%")
    print(f"\n{'300 float inputs':<20} {'batch':>5} {'raw inline ms':>14} {'process inline ms':>18} {'/ raw':>7} "
          f"{'/ RunCallable':>14} {'/ raw decoding too':>19} {'decode + encode / raw':>22}")
    for r in report["wide"]:
        print(f"{'':<20} {r['batch']:>5} {r['raw_inline_ms']:>14.4f} {r['process_inline_ms']:>18.4f} "
              f"{r['ratio_inline']:>6.2f}x {r['ratio_inline_to_callable_raw']:>13.3f}x "
              f"{r['ratio_inline_to_decoding_raw']:>18.3f}x {100 * r['codec_share']:>21.1f}%")
    print(f"\n{'model':<20} {'path':<20} {'sessions':>8} {'threads':>7} {'req/s':>10}")
    for r in report["throughput"]:
        print(f"{r['model']:<20} {r['path']:<20} {r['session_num']:>8} {r['threads']:>7} {r['requests_per_s']:>10.0f}")
    print(f"\nwritten to {save_results('performance', report)}")
    print(f"plot: {plot_latency_by_batch(report)}")


PLOTTED_PATHS = {"raw_tf_session_run": "bare TF_SessionRun (C)", "process_c": "process() from C",
                 "processor_process": "Processor.process", "tf1_session_run": "TF1 Session.run",
                 "tf2_signature": "TF2 signature call"}


def plot_latency_by_batch(report: dict) -> Path:
    """docs/plots/latency_by_batch.svg: median latency of each path by batch size, example model."""
    from plots import DOCS_PLOTS, line_chart
    model = report["latency"][0]["model"]
    series = {label: [(r["batch"], r["median_ms"]) for r in report["latency"] if r["model"] == model and r["path"] == path]
              for path, label in PLOTTED_PATHS.items()}
    series["process() from C, inline"] = [(r["batch"], r["process_inline_ms"]) for r in report["process_to_raw"]
                                          if r["model"] == model]
    series["bare TF_SessionRun, inline"] = [(r["batch"], r["raw_inline_ms"]) for r in report["process_to_raw"]
                                            if r["model"] == model]
    return line_chart(DOCS_PLOTS / "latency_by_batch.svg", f"Median latency by batch size: {model} model",
                      "batch size", "ms per request", series, log_x=True,
                      caption="make bench (benchmarks/performance.py)")


if __name__ == "__main__":
    main()
