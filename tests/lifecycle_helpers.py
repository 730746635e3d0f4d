"""Helpers for tests that change versions on disk while a processor serves."""
from __future__ import annotations

import time

import numpy as np

from processor import predict_pb2, tensors, training


def wait_for(condition, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def serialize(batch) -> bytes:
    request = predict_pb2.PredictRequest()
    for name, value in batch.items():
        tensors.to_array_proto(np.asarray(value), request.inputs[name])
    return request.SerializeToString()


def json_rows(batch) -> list:
    """A batch as TF Serving's REST row format ("instances"): one object per example, bytes as text."""
    return [{name: (value[i].decode() if isinstance(value[i], bytes) else value[i].tolist())
             for name, value in batch.items()} for i in range(len(next(iter(batch.values()))))]


def prob_of(response: bytes) -> np.ndarray:
    return tensors.from_array_proto(predict_pb2.PredictResponse.FromString(response).outputs["prob"])


def matching_version(prob: np.ndarray, references: list) -> int:
    """Index of the one reference `prob` equals; -1 if none (a torn mix of versions matches none)."""
    matches = [i for i, ref in enumerate(references) if np.allclose(prob, ref, rtol=0, atol=1e-6)]
    return matches[0] if len(matches) == 1 else -1


EMBEDDINGS = ("user_embedding", "item_embedding", "category_embedding")


class DeltaTrainer:
    """Trains, and writes deltas holding exactly what changed since the previous save."""

    def __init__(self, model):
        self.model = model
        self.trainer = model.trainer
        import tensorflow as tf
        self.variables = {v.op.name: v for v in self.trainer.graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)}
        self.snapshot = self.values()

    def values(self):
        return self.trainer.session.run(self.variables)

    def train_and_save_delta(self, steps=3, seed=0) -> str:
        self.trainer.train(steps, seed=seed)
        now = self.values()
        changed_rows, whole = {}, []
        for name, value in now.items():
            if np.array_equal(value, self.snapshot[name]):
                continue
            if name in EMBEDDINGS:
                changed_rows[name] = np.nonzero(np.any(value != self.snapshot[name], axis=1))[0]
            else:
                whole.append(name)
        self.snapshot = now
        step = int(now["global_step"])
        return training.save_incremental_checkpoint(self.trainer.session, self.model.checkpoint_dir, step,
                                                       changed_rows, whole)

    def save_full(self) -> str:
        self.snapshot = self.values()
        return self.trainer.save_checkpoint(self.model.checkpoint_dir)


def loaded_versions(p) -> int:
    """The model versions loaded in the process, as `p`'s metrics report them (:processor:loaded_versions)."""
    for line in p.metrics().splitlines():
        if line.startswith(":processor:loaded_versions "):
            return int(line.split()[1])
    raise AssertionError("the metrics have no :processor:loaded_versions")
