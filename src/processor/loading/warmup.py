"""Warmup requests: served by every new version before it takes traffic, so that its first real
requests do not pay for TensorFlow's lazy initialization.

Formats of `warmup_file_name` (absolute, or relative to the SavedModel directory):
  (a) one serialized PredictRequest (DeepRec's format);
  (b) a TFRecord file whose records are serialized PredictRequests, or TF Serving PredictionLogs with a
      predict_log or predict_streamed_log (their requests served as TF Serving's, as process_as()
      takes them: every dtype, TensorFlow's fill rule; the model_spec's version is not checked, as
      TF Serving's warmup does not check it); a PredictionLog of
      another kind (classify_log, regress_log, multi_inference_log, session_run_log) is named in the
      error, since a predict signature cannot take it.
Without `warmup_file_name`, `<SavedModel>/assets.extra/tf_serving_warmup_requests` is used when present.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Dict, List, Optional, Tuple

from google.protobuf.message import DecodeError

from .. import predict_pb2, tf_serving_warmup_pb2
from ..errors import ModelLoadError
from ..formats.checkpoint_index import CheckpointIndexError, read_varint
from ..formats.tfrecord import TFRecordError, looks_like_tfrecord, read_records
from ..request_formats import FORMAT_DEEPREC, FORMAT_TF_SERVING_PREDICT

logger = logging.getLogger(__name__)

TF_SERVING_WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def warmup_file(warmup_file_name: str, savedmodel_dir: str) -> Optional[str]:
    if warmup_file_name:
        return warmup_file_name if os.path.isabs(warmup_file_name) else os.path.join(savedmodel_dir, warmup_file_name)
    default = os.path.join(savedmodel_dir, TF_SERVING_WARMUP_FILE)
    return default if os.path.isfile(default) else None


# PredictionLog kinds that cannot warm up a predict signature (tensorflow_serving/apis/prediction_log.proto).
OTHER_LOG_KINDS = {2: "classify_log", 3: "regress_log", 4: "multi_inference_log", 5: "session_run_log"}


def _top_level_fields(record: bytes) -> set:
    """The field numbers of a serialized message's top level; empty if it is not one."""
    fields, at = set(), 0
    sizes = {1: 8, 5: 4}  # fixed64, fixed32
    try:
        while at < len(record):
            key, at = read_varint(record, at)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, at = read_varint(record, at)
            elif wire_type == 2:
                length, at = read_varint(record, at)
                at += length
            elif wire_type in sizes:
                at += sizes[wire_type]
            else:
                return set()
            fields.add(number)
    except CheckpointIndexError:  # a truncated varint
        return set()
    return fields if at == len(record) else set()


# A warmup request: (its format, FORMAT_*; its bytes).
WarmupRequest = Tuple[int, bytes]


def _record_to_requests(record: bytes) -> List[WarmupRequest]:
    """The requests one warmup record holds: itself (DeepRec's PredictRequest), or a TF Serving
    PredictionLog's predict_log request or predict_streamed_log requests (TF Serving's PredictRequests).
    Other PredictionLog kinds raise ValueError naming them."""
    # A TF Serving record has field 6 or 7, which our PredictRequest lacks; check it first.
    try:
        log = tf_serving_warmup_pb2.PredictionLog.FromString(record)
    except DecodeError:
        log = None
    if log is not None and log.HasField("predict_log"):
        return [(FORMAT_TF_SERVING_PREDICT, log.predict_log.request.SerializeToString())]
    if log is not None and log.HasField("predict_streamed_log"):
        return [(FORMAT_TF_SERVING_PREDICT, request.SerializeToString())
                for request in log.predict_streamed_log.request]
    request = predict_pb2.PredictRequest.FromString(record)  # validates
    # Fields 2 and 3 of a PredictionLog (classify_log, regress_log) parse as our inputs and output_filter,
    # with the nested message's bytes as names: no name a signature has holds control characters.
    names = [request.signature_name, *request.inputs, *request.output_filter]
    fields = _top_level_fields(record)
    if fields & {4, 5} or not all(name.isprintable() for name in names):
        kinds = [kind for number, kind in OTHER_LOG_KINDS.items() if number in fields]
        raise ValueError(f"it is a TF Serving PredictionLog with a {' or '.join(kinds) or 'record'} of another "
                         f"kind than predict: only predict_log and predict_streamed_log records (or "
                         f"PredictRequests) warm up a version")
    return [(FORMAT_DEEPREC, record)]


def read_warmup_requests(path: str) -> List[WarmupRequest]:
    """The requests of a warmup file; ModelLoadError names the file and what is wrong."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelLoadError(f"cannot read warmup file {path}: {e.strerror}") from None
    try:
        if looks_like_tfrecord(data[:12]):
            requests = []
            for index, record in enumerate(read_records(data)):
                try:
                    requests.extend(_record_to_requests(record))
                except (DecodeError, ValueError, TypeError) as e:
                    raise ModelLoadError(f"warmup file {path}: record {index} is not a PredictRequest or "
                                         f"PredictionLog: {e}") from None
            return requests
        predict_pb2.PredictRequest.FromString(data)
        return [(FORMAT_DEEPREC, data)]
    except TFRecordError as e:
        raise ModelLoadError(f"warmup file {path}: {e}") from None
    except DecodeError as e:
        raise ModelLoadError(f"warmup file {path} is neither a PredictRequest nor a TFRecord file: {e}") from None


class WarmupRequests:
    """Warmup requests by file, read again only when the file changes."""

    def __init__(self):
        self._lock = threading.Lock()
        self._cache: Dict[str, Tuple[Tuple[int, int], List[WarmupRequest]]] = {}

    def get(self, path: str) -> List[WarmupRequest]:
        try:
            stat = os.stat(path)
            key = (stat.st_mtime_ns, stat.st_size)
        except OSError as e:
            raise ModelLoadError(f"cannot read warmup file {path}: {e.strerror}") from None
        with self._lock:
            cached = self._cache.get(path)
            if cached and cached[0] == key:
                return cached[1]
        requests = read_warmup_requests(path)
        with self._lock:
            self._cache[path] = (key, requests)
        return requests


def run_warmup(servable, requests: List[WarmupRequest], iterations: int, what: str) -> None:
    """Serves every request `iterations` times on `servable`; any non-200 fails the version's load."""
    for _ in range(iterations):
        for index, (request_format, request) in enumerate(requests):
            code, body = servable.process(request, request_format)
            if code != 200:
                raise ModelLoadError(f"warmup of {what} failed: request {index} answered {code}: "
                                     f"{body.decode('utf-8', 'replace')}")
    if requests:
        logger.info("warmed up %s with %d request(s) x %d", what, len(requests), iterations)
