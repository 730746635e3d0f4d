"""`make demo`: build a real model with TensorFlow, serve it with Processor from Python and from a plain
C host, then train further and hot-swap the new version while requests keep flowing."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import recommendation_model  # noqa: E402

import processor  # noqa: E402
from processor import predict_pb2, tensors  # noqa: E402


def banner(text: str) -> None:
    print(f"\n=== {text}")


def show_predictions(title, served, reference):
    print(f"{title}\n  {'processor':>12} {'tensorflow':>12}")
    for a, b in zip(served, reference):
        print(f"  {a:12.6f} {b:12.6f}")
    print(f"  max |difference| = {np.abs(served - reference).max():.2e}")


def main() -> None:
    work = Path(os.environ.get("DEMO_DIR", HERE.parent / "build" / "demo"))
    shutil.rmtree(work, ignore_errors=True)
    banner(f"training a recommendation model with TensorFlow into {work}")
    dirs, trainer = recommendation_model.build(str(work), steps_per_version=20, versions=2)
    config = {"savedmodel_dir": dirs.savedmodel_dir, "checkpoint_dir": dirs.checkpoint_dir}
    (work / "config.json").write_text(json.dumps(config, indent=2))
    print(json.dumps(config, indent=2))

    batch = recommendation_model.random_batch(5, np.random.default_rng(0))
    reference = recommendation_model.RecommendationModel()

    with processor.Processor(config) as p:
        info = p.model_info()
        banner(f"serving {info.model_path} (step {info.version_step}, loaded in {info.load_duration_ms} ms)")
        print("signature inputs:", ", ".join(f"{i['alias']} {i['dtype']} {i['shape']}" for i in p.signature()["inputs"]))
        reference.restore(info.model_path)
        show_predictions("click probability, Processor.predict() vs TensorFlow's Session.run():",
                         p.predict(batch)["prob"], reference.predict(batch)["prob"])

        banner("the same request from a C program (dlopen, env -i, no Python in the host)")
        request = predict_pb2.PredictRequest()
        for name, value in batch.items():
            tensors.to_array_proto(np.asarray(value), request.inputs[name])
        (work / "request.bin").write_bytes(request.SerializeToString())
        (work / "c_out").mkdir()
        host = subprocess.run(["env", "-i", str(HERE / "c_host" / "c_host"), processor.library_path(),
                               str(work / "config.json"), "--out", str(work / "c_out"), str(work / "request.bin")],
                              capture_output=True, text=True)
        print("\n".join(line for line in host.stdout.splitlines() if not line.startswith("signature")))
        response = predict_pb2.PredictResponse.FromString((work / "c_out" / "0.bin").read_bytes())
        print("  prob from the C host:", np.round(tensors.from_array_proto(response.outputs["prob"]), 6))

        banner("hot update: train more, save a new checkpoint, swap while 2 threads keep sending requests")
        stop = threading.Event()
        codes = []
        serialized = request.SerializeToString()

        def client():
            while not stop.is_set():
                codes.append(p.process(serialized)[0])

        clients = [threading.Thread(target=client) for _ in range(2)]
        for c in clients:
            c.start()
        trainer.train(30, seed=9)
        newer = trainer.save_checkpoint(dirs.checkpoint_dir)
        swapped = p.update()
        for _ in range(200):  # let requests flow on the new version too
            p.process(serialized)
        stop.set()
        for c in clients:
            c.join()
        info = p.model_info()
        print(f"swapped: {swapped}; now serving {info.model_path} (step {info.version_step}), "
              f"updates applied: {info.updates_applied}")
        print(f"requests during the update: {len(codes)}, non-200 responses: {sum(c != 200 for c in codes)}")
        reference.restore(newer)
        show_predictions("click probability after the update:", p.predict(batch)["prob"], reference.predict(batch)["prob"])
    trainer.close()
    reference.close()
    print("\ndone.")


if __name__ == "__main__":
    main()
