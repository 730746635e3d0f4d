"""Example hosts (examples/*_host) run as real processes: started under `env -i` with the library and
a config, ready once they print "listening on HOST:PORT", stopped with SIGTERM."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

import processor
from lifecycle_helpers import serialize, wait_for
from processor import predict_pb2, tensors


class HostProcess:
    """A running host; `address` is the HOST:PORT it printed."""

    def __init__(self, command: list, config: dict, tmp_path: Path, options: tuple = ()):
        config_path = tmp_path / "config.json"
        config_path.write_text(json.dumps(config))
        self.log = open(tmp_path / f"{Path(command[-1]).name}.stderr", "w+")
        self.process = subprocess.Popen(["env", "-i", *command, processor.library_path(), str(config_path),
                                         "--address", "127.0.0.1:0", *options],
                                        stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.process.stdout.readline()
        match = re.match(r"listening on (127\.0\.0\.1:\d+)", line)
        assert match, f"the host did not start: {line!r} {self.stderr()}"
        self.address = match.group(1)

    def stderr(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, timeout: float = 30.0):
        """SIGTERM; returns (exit code, seconds to exit, the rest of stdout)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        rest, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode, time.monotonic() - started, rest

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


def outputs_of(response_bytes: bytes) -> dict:
    response = predict_pb2.PredictResponse.FromString(response_bytes)
    return {name: tensors.from_array_proto(array) for name, array in response.outputs.items()}


def serve_through_swaps(model, reference, batch, send, model_path, clients: int = 4, swaps: int = 3):
    """Sends `batch` from `clients` threads (send(request bytes) -> response bytes, raising on an
    error) while `swaps` new versions are written into the model's checkpoint directory, until the host
    serves the newest (model_path() -> its model_path) and half a second more. Asserts that no request
    failed, that every thread was answered, and that every answer equals TensorFlow's outputs for one
    version; returns the set of versions the answers came from, which includes the newest."""
    request = serialize(batch)
    expected = {model.prefixes()[-1]: reference.predict(model.prefixes()[-1], batch)}
    answers, failures, counts = set(), [], []
    stop = threading.Event()

    def client():
        count = 0
        while not stop.is_set():
            try:
                answers.add(send(request))
                count += 1
            except Exception as e:  # noqa: BLE001 - every failure is reported below
                failures.append(f"{type(e).__name__}: {e}")
        counts.append(count)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        for seed in range(swaps):
            time.sleep(0.8)
            model.trainer.train(3, seed=200 + seed)
            prefix = model.trainer.save_checkpoint(model.checkpoint_dir)
            expected[prefix] = reference.predict(prefix, batch)
        newest = model.prefixes()[-1]
        wait_for(lambda: model_path() == newest, what=f"the host to serve {newest}")
        time.sleep(0.5)  # answers from the newest version
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [], failures[:5]
    assert sum(counts) > 50 and all(counts), counts
    seen = set()
    for answer in answers:
        served = outputs_of(answer)
        matching = [p for p, outputs in expected.items()
                    if all(np.allclose(served[name], value, atol=1e-5) for name, value in outputs.items())]
        assert matching, "an answer equals no version's TensorFlow outputs"
        seen.update(matching)
    assert newest in seen and len(seen) >= 2
    return seen
