"""Helpers for tests that change versions on disk while a processor serves."""
from __future__ import annotations

import time

import numpy as np

from processor import predict_pb2, tensors


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


def prob_of(response: bytes) -> np.ndarray:
    return tensors.from_array_proto(predict_pb2.PredictResponse.FromString(response).outputs["prob"])


def matching_version(prob: np.ndarray, references: list) -> int:
    """Index of the one reference `prob` equals; -1 if none (a torn mix of versions matches none)."""
    matches = [i for i, ref in enumerate(references) if np.allclose(prob, ref, rtol=0, atol=1e-6)]
    return matches[0] if len(matches) == 1 else -1
