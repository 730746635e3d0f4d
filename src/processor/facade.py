"""Processor: a served model, from Python. The same object backs the C ABI's handle for C hosts."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import _core, predict_pb2, tensors
from .config import parse_config
from .errors import ConfigError, RequestError
from .request_formats import FORMAT_DEEPREC
from .lifecycle import STORE_CHECK_SECONDS, VersionLifecycle
from .loading.loader import VersionLoader
from .session_group import apply_openmp_settings
from .updater import PollingThread

logger = logging.getLogger(__name__)

OK = 200


@dataclass(frozen=True)
class ModelInfo:
    """ServingModelInfo as a dataclass."""
    model_path: str
    savedmodel_dir: str
    signature_name: str
    version_step: int
    load_time_unix_ms: int
    load_duration_ms: int
    updates_applied: int
    updates_failed: int
    delta_step: int
    savedmodel_version: int
    pinned: bool

    @classmethod
    def from_bytes(cls, data: bytes) -> "ModelInfo":
        message = predict_pb2.ServingModelInfo.FromString(data)
        return cls(**{name: getattr(message, name) for name in cls.__dataclass_fields__})


def parse_signatures(description: bytes) -> Dict[str, dict]:
    """The signatures in what an empty request answers (Servable::description_json): the main one's
    description holding the others' in "other_signatures". By name, the main one first."""
    main = json.loads(description)
    return {s["signature_name"]: s for s in [main, *main.pop("other_signatures", [])]}


class Processor:
    """Loads the model the config describes, serves it, and keeps it up to date.

    `config` is a dict, a JSON string or the path of a JSON file. Raises ConfigError or ModelLoadError.
    With a poll interval > 0 a background thread serves each newer complete version as it appears.
    `model_entry` (initialize()'s first argument) is put before a `warmup_file_name`, as DeepRec's
    processor does (model_serving.cc).
    """

    def __init__(self, config: Union[Mapping[str, Any], str, bytes], model_entry: str = ""):
        self.config = parse_config(config)
        self.model_entry = model_entry
        if model_entry and self.config.warmup_file_name:
            self.config = dataclasses.replace(self.config, warmup_file_name=model_entry + self.config.warmup_file_name)
        openmp = apply_openmp_settings(self.config)
        if openmp:
            logger.info("exported %s (the TF wheel itself uses no OpenMP)", openmp)
        self._loader = VersionLoader(self.config)
        try:
            self._start()
        except BaseException:
            self._loader.close()
            raise

    def _start(self) -> None:
        self._lifecycle = VersionLifecycle(self.config, self._loader)
        # (the serving version's record, its signature, dtypes): keyed by the record, which holds no servable,
        # so that the cache never keeps a version alive after a swap or close()
        self._signature: Optional[Tuple[object, Dict[str, dict], Dict[str, Dict[str, int]]]] = None
        self._threads: List[PollingThread] = []
        self._timeline_uploader = None  # with an oss:// timeline_path
        loaded = self._loader.load(self._lifecycle.first_version())
        handle = _core.ModelHandle(self.config.model_name)
        handle.set_limits(self.config.max_request_bytes, self.config.max_tensor_elements)
        if self.config.timeline_trace_count > 0:
            self._start_timeline(handle)
        if self.config.request_log is not None:
            self._start_request_log(handle)
        self._lifecycle.serve_first(handle, loaded)
        if self.config.effective_poll_interval > 0:
            self._threads.append(PollingThread(self.config.effective_poll_interval, self._lifecycle.poll))
        if self._loader.feature_store is not None and self._loader.feature_store.is_redis:
            # Redis: reloads the serving version when its tables lost rows
            self._threads.append(PollingThread(STORE_CHECK_SECONDS, self._lifecycle.check_store,
                                               name="processor-store-watch"))
        for thread in self._threads:
            thread.start()

    # ---- serving

    @property
    def handle(self) -> int:
        """The model handle as the C ABI's `void*` (an integer address)."""
        return self._lifecycle.live_handle().address

    def process(self, request: Union[bytes, bytearray, memoryview], format: int = FORMAT_DEEPREC) -> Tuple[int, bytes]:
        """The C ABI's process_as(): a serialized request in, (code, bytes) out. Releases the GIL.

        `format`: FORMAT_DEEPREC (protos/predict.proto's PredictRequest, as process() takes) or
        FORMAT_TF_SERVING_PREDICT (a tensorflow.serving.PredictRequest, answered with its PredictResponse).
        """
        handle = self._lifecycle.handle
        if handle is None:
            return 503, b"the processor is closed"
        return handle.process(request, format)

    def signature(self, name: str = "") -> dict:
        """A signature the serving version serves: {"signature_name", "method_name", "inputs": [...],
        "outputs": [...]}. `name` empty: the main one (the config's signature_name). Raises RequestError
        (400, TF Serving's message) for a name the version has no signature of."""
        signatures = self._signatures_and_dtypes()[0]
        if not name:
            return next(iter(signatures.values()))
        if name not in signatures:
            raise RequestError(400, f'Serving signature key "{name}" not found.')
        return signatures[name]

    def signatures(self) -> Dict[str, dict]:
        """Every signature the serving version serves (each SignatureDef of its MetaGraphDef that binds to
        the graph), by name, the main one first."""
        return dict(self._signatures_and_dtypes()[0])

    def _signatures_and_dtypes(self) -> Tuple[Dict[str, dict], Dict[str, Dict[str, int]]]:
        """The serving version's signatures by name (the main one first), and per signature the
        ArrayDataType of each input by alias and tensor name, cached with the version they describe, so
        that a swap never pairs one version's signature with another's."""
        servable, record = self._lifecycle.serving_pair()
        cached = self._signature
        if cached is None or cached[0] is not record or servable is None:
            # Asked of the serving version directly: the lookup is not a request of the host's, and
            # must not count in request_count (an empty request through process() does).
            code, body = servable.process(b"") if servable is not None else self.process(b"")
            if code != OK:
                raise RequestError(code, body.decode("utf-8", "replace"))
            signatures = parse_signatures(body)
            dtypes = {}
            for name, signature in signatures.items():
                dtypes[name] = {}
                for spec in signature["inputs"]:
                    dtypes[name][spec["alias"]] = dtypes[name][spec["tensor_name"]] = \
                        predict_pb2.ArrayDataType.Value(spec["dtype"])
            cached = self._signature = (record, signatures, dtypes)
        return cached[1], cached[2]

    def predict(self, inputs: Mapping[str, Any], output_filter: Optional[Iterable[str]] = None,
                signature_name: str = "", version: Optional[int] = None,
                strict_signature_name: bool = False) -> Dict[str, np.ndarray]:
        """numpy in, numpy out. Values are converted to the signature's dtypes where that loses nothing.
        `version`: answered only by the version of that number (model_info()'s version_step, else the
        SavedModel's version; TF Serving's number), else RequestError 404, checked with the run so that
        a swap cannot answer it from another version. `strict_signature_name`: a signature_name the version
        answering lacks gets RequestError 400 (TF Serving's rule), not the main signature (DeepRec's), for
        hosts that chose the signature by name from signatures(). Raises RequestError with the ABI's code
        and message."""
        signatures, dtypes_of = self._signatures_and_dtypes()
        # The signature the engine runs: the one named, else (DeepRec's rule) the main one.
        dtypes = dtypes_of[signature_name if signature_name in signatures else next(iter(signatures))]
        arrays = {}
        for name, value in inputs.items():
            try:
                arrays[name] = tensors.to_numpy_input(name, value, dtypes.get(name))
            except (TypeError, ValueError) as e:
                raise RequestError(400, str(e)) from None
        try:  # numpy to request bytes and response bytes to numpy in C++; the run without the GIL
            code, result = self._lifecycle.live_handle().predict(arrays, list(output_filter or []), signature_name,
                                                                 -1 if version is None else version,
                                                                 strict_signature_name)
        except (TypeError, ValueError) as e:  # inputs numpy cannot take, or over the ABI's 2 GiB
            raise RequestError(400, str(e)) from None
        if code != OK:
            raise RequestError(code, result.decode("utf-8", "replace"))
        return result

    def serving_model_info(self) -> Tuple[int, bytes]:
        """The C ABI's get_serving_model_info(): (code, serialized ServingModelInfo or message)."""
        handle = self._lifecycle.handle
        if handle is None:
            return 503, b"the processor is closed"
        return handle.model_info()

    def metrics(self) -> str:
        """Prometheus text exposition: request counts and latency, serving version, loads (C get_metrics)."""
        return self._lifecycle.live_handle().metrics()[1].decode("utf-8")

    def model_info(self) -> ModelInfo:
        code, body = self.serving_model_info()
        if code != OK:
            raise RequestError(code, body.decode("utf-8", "replace"))
        return ModelInfo.from_bytes(body)

    # ---- versions (lifecycle.py)

    def update(self) -> bool:
        """Serves the newest complete version if it is newer than the serving one (and not held back by
        a rollback pin): loads and warms it up beside the serving version, then swaps atomically;
        requests in flight finish on the version they started on. Returns True when it swapped. A
        version that fails raises ModelLoadError, and the serving version stays."""
        return self._lifecycle.update(raise_errors=True)

    def versions(self) -> List[int]:
        """Checkpoint steps (or SavedModel versions without a checkpoint dir) rollback() can return to,
        oldest first; the serving one included."""
        return self._lifecycle.versions()

    def rollback(self, version: Optional[int] = None) -> None:
        """Serves an earlier version again: `version` is a kept checkpoint step (see versions()), or
        None / -1 for the one before the serving version. Serving stays pinned to it until a version
        newer than any seen so far appears, or until unpin(). Raises RequestError(400) for a version
        that is not kept, ModelLoadError when it no longer loads (the serving version stays)."""
        self._lifecycle.rollback(version)

    def unpin(self) -> bool:
        """Lifts a rollback pin and serves the newest version again; returns True when it swapped."""
        return self._lifecycle.unpin()

    # ---- lifecycle

    def close(self) -> None:
        """Stops polling, stops serving (process() answers 503 from now on) and releases the model, once the
        requests still on it have answered. Does not wait for a load in progress: its result is discarded.
        Idempotent."""
        for thread in self._threads:
            thread.stop()
        handle = self._lifecycle.close()
        if handle is not None:
            handle.unload()
            if self.config.request_log is not None:
                handle.set_request_log("", 0, 1, 1, 1)  # writes what is queued and closes the file
            if self._timeline_uploader is not None:
                self._timeline_uploader.close()
            self._loader.close()
            logger.info("processor closed")

    def __enter__(self) -> "Processor":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---- internals

    def _start_timeline(self, handle: _core.ModelHandle) -> None:
        path = self.config.timeline_path
        if path.startswith("oss://"):  # written locally, then uploaded
            from .stores.cache import default_cache_dir
            from .timeline_upload import UPLOAD_SECONDS, TimelineUploader
            staging = os.path.join(self.config.local_cache_dir or default_cache_dir(), "timeline",
                                   f"{self.config.model_name}-{os.getpid()}-{id(self):x}")
            self._timeline_uploader = TimelineUploader(self.config, staging)
            self._threads.append(PollingThread(UPLOAD_SECONDS, self._timeline_uploader.upload_finished,
                                               name="processor-timeline-upload"))
            path = staging
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise ConfigError("timeline_path", f"cannot create {path!r}: {e.strerror}") from None
        handle.set_timeline(self.config.timeline_start_step, max(self.config.timeline_interval_step, 1),
                           self.config.timeline_trace_count, path)
        logger.info("tracing %d request(s) from step %d every %d into %s", self.config.timeline_trace_count,
                    self.config.timeline_start_step, max(self.config.timeline_interval_step, 1),
                    self.config.timeline_path)

    def _start_request_log(self, handle: _core.ModelHandle) -> None:
        log = self.config.request_log
        directory = os.path.dirname(os.path.abspath(log.path))
        try:
            os.makedirs(directory, exist_ok=True)
            handle.set_request_log(log.path, log.sample_rate, log.max_records, log.max_bytes, log.backups)
        except (OSError, _core.LoadError) as e:
            raise ConfigError("request_log.path", str(e)) from None
        logger.info("logging %g of the requests into %s", log.sample_rate, log.path)
