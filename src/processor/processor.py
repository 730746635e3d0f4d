"""Processor: a served model, from Python. The same object backs the C ABI's handle for C hosts."""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import _core, predict_pb2, tensors
from .config import ProcessorConfig, parse_config
from .errors import ConfigError, ModelLoadError, RequestError
from .updater import PollingThread
from .version_loader import Candidate, LoadedVersion, VersionLoader, VersionRecord

logger = logging.getLogger(__name__)

OK = 200
MAX_RETRY_BACKOFF_SECONDS = 600.0


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


@dataclass
class _Failure:
    count: int
    retry_at: float  # time.monotonic()


def _refuse_unsupported(config: ProcessorConfig) -> None:
    if config.feature_store_type != "local":
        raise ConfigError("feature_store_type", f"'{config.feature_store_type}' is not supported yet; use 'local'")
    if config.model_store_type != "local":
        raise ConfigError("model_store_type", f"'{config.model_store_type}' is not supported yet; use 'local'")


class Processor:
    """Loads the model the config describes, serves it, and keeps it up to date.

    `config` is a dict, a JSON string or the path of a JSON file. Raises ConfigError or ModelLoadError.
    With a poll interval > 0 a background thread serves each newer complete version as it appears.
    """

    def __init__(self, config: Union[Mapping[str, Any], str, bytes], model_entry: str = ""):
        self.config = parse_config(config)
        self.model_entry = model_entry
        _refuse_unsupported(self.config)
        self._loader = VersionLoader(self.config)
        self._update_lock = threading.Lock()  # one load at a time: updates, rollbacks
        self._state_lock = threading.Lock()   # installing vs closing
        self._updates_applied = 0
        self._updates_failed = 0
        self._failures: Dict[Tuple[str, str], _Failure] = {}
        self._history: List[Candidate] = []   # loaded versions by key, the serving one included
        self._pin: Optional[Tuple[int, int]] = None  # serve nothing newer than this until a newer one appears
        self._signature: Optional[Tuple[dict, Dict[str, int]]] = None
        self._serving: Optional[VersionRecord] = None

        candidate = self._loader.discover()
        if candidate is None:
            raise ModelLoadError(self._loader.explain_missing())
        loaded = self._loader.load(candidate)
        self._model: Optional[_core.Model] = _core.Model()
        self._install(loaded)
        self._poller: Optional[PollingThread] = None
        if self.config.effective_poll_interval > 0:
            self._poller = PollingThread(self.config.effective_poll_interval, self._poll)
            self._poller.start()

    # ---- serving

    @property
    def handle(self) -> int:
        """The model handle as the C ABI's `void*` (an integer address)."""
        return self._live_model().address

    def process(self, request: Union[bytes, bytearray, memoryview]) -> Tuple[int, bytes]:
        """The C ABI's process(): a serialized PredictRequest in, (code, bytes) out. Releases the GIL."""
        model = self._model
        if model is None:
            return 503, b"the processor is closed"
        return model.process(request)

    def signature(self) -> dict:
        """The served signature: {"signature_name", "method_name", "inputs": [...], "outputs": [...]}."""
        return self._signature_and_dtypes()[0]

    def _signature_and_dtypes(self) -> Tuple[dict, Dict[str, int]]:
        """The signature, and the ArrayDataType of each input by alias and tensor name. Cached as one
        tuple so that a concurrent version swap never pairs one version's signature with another's."""
        cached = self._signature
        if cached is None:
            code, body = self.process(b"")
            if code != OK:
                raise RequestError(code, body.decode("utf-8", "replace"))
            signature = json.loads(body)
            dtypes = {}
            for spec in signature["inputs"]:
                dtypes[spec["alias"]] = dtypes[spec["name"]] = predict_pb2.ArrayDataType.Value(spec["dtype"])
            cached = self._signature = (signature, dtypes)
        return cached

    def predict(self, inputs: Mapping[str, Any], output_filter: Optional[Iterable[str]] = None,
                signature_name: str = "") -> Dict[str, np.ndarray]:
        """numpy in, numpy out. Values are converted to the signature's dtypes where that loses nothing.
        Raises RequestError with the ABI's code and message."""
        dtypes = self._signature_and_dtypes()[1]
        request = predict_pb2.PredictRequest(signature_name=signature_name, output_filter=list(output_filter or []))
        for name, value in inputs.items():
            try:
                array = tensors.to_numpy_input(name, value, dtypes.get(name))
                tensors.to_array_proto(array, request.inputs[name])
            except (TypeError, ValueError) as e:
                raise RequestError(400, str(e)) from None
        code, body = self.process(request.SerializeToString())
        if code != OK:
            raise RequestError(code, body.decode("utf-8", "replace"))
        response = predict_pb2.PredictResponse.FromString(body)
        return {name: tensors.from_array_proto(array) for name, array in response.outputs.items()}

    def serving_model_info(self) -> Tuple[int, bytes]:
        """The C ABI's get_serving_model_info(): (code, serialized ServingModelInfo or message)."""
        model = self._model
        if model is None:
            return 503, b"the processor is closed"
        return model.model_info()

    def model_info(self) -> ModelInfo:
        code, body = self.serving_model_info()
        if code != OK:
            raise RequestError(code, body.decode("utf-8", "replace"))
        return ModelInfo.from_bytes(body)

    # ---- versions

    def update(self) -> bool:
        """Serves the newest complete version if it is newer than the serving one (and not held back by
        a rollback pin): loads and warms it up beside the serving version, then swaps atomically;
        requests in flight finish on the version they started on. Returns True when it swapped. A
        version that fails raises ModelLoadError, and the serving version stays."""
        return self._update(raise_errors=True)

    def versions(self) -> List[int]:
        """Checkpoint steps (or SavedModel versions without a checkpoint dir) rollback() can return to,
        oldest first; the serving one included."""
        with self._update_lock:
            return [self._version_number(c) for c in self._history]

    def rollback(self, version: Optional[int] = None) -> None:
        """Serves an earlier version again: `version` is a kept checkpoint step (see versions()), or
        None / -1 for the one before the serving version. Serving stays pinned to it until a version
        newer than any seen so far appears, or until unpin(). Raises RequestError(400) for a version
        that is not kept, ModelLoadError when it no longer loads (the serving version stays)."""
        with self._update_lock:
            self._live_model()
            current = self._serving.candidate
            if version is None or version == -1:
                earlier = [c for c in self._history if c.key < current.key]
                if not earlier:
                    raise RequestError(400, "there is no earlier version to roll back to")
                target = earlier[-1]
            else:
                matches = [c for c in self._history if self._version_number(c) == version]
                if not matches:
                    kept = ", ".join(str(self._version_number(c)) for c in self._history)
                    raise RequestError(400, f"version {version} is not among the kept versions ({kept})")
                target = matches[-1]
            newest = self._loader.discover()
            watermark = max([c.key for c in self._history] + ([newest.key] if newest else []))
            loaded = self._load_counting_failures(target)
            self._pin = watermark
            self._install(loaded)
            logger.info("rolled back to %s; pinned until a version newer than %s appears", target.describe(), watermark)

    def unpin(self) -> bool:
        """Lifts a rollback pin and serves the newest version again; returns True when it swapped."""
        with self._update_lock:
            self._pin = None
        return self._update(raise_errors=True)

    # ---- lifecycle

    def close(self) -> None:
        """Stops polling, stops serving (process() answers 503 from now on) and releases the model once
        no request holds it. Does not wait for a load in progress: its result is discarded. Idempotent."""
        if self._poller is not None:
            self._poller.stop()
        with self._state_lock:
            model, self._model = self._model, None
        if model is not None:
            model.unload()
            logger.info("processor closed")

    def __enter__(self) -> "Processor":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---- internals

    def _live_model(self) -> _core.Model:
        model = self._model
        if model is None:
            raise RequestError(503, "the processor is closed")
        return model

    def _version_number(self, candidate: Candidate) -> int:
        return candidate.checkpoint.step if candidate.checkpoint else candidate.savedmodel.version

    def _poll(self) -> None:
        try:
            self._update(raise_errors=False)
        except RequestError as e:
            if e.code != 503:  # 503: closed meanwhile; nothing to do
                raise

    def _update(self, raise_errors: bool) -> bool:
        with self._update_lock:
            self._live_model()
            candidate = self._loader.discover()
            if candidate is None or candidate.key <= self._serving.candidate.key:
                return False
            if self._pin is not None:
                if candidate.key <= self._pin:
                    return False
                logger.info("version %s is newer than the rollback pin: unpinning", candidate.describe())
                self._pin = None
            failure = self._failures.get(self._identity(candidate))
            if failure and not raise_errors and time.monotonic() < failure.retry_at:
                return False
            try:
                loaded = self._load_counting_failures(candidate)
            except ModelLoadError:
                if raise_errors:
                    raise
                return False
            self._updates_applied += 1
            self._install(loaded)
            self._failures.clear()  # older failed versions are moot now
            return True

    @staticmethod
    def _identity(candidate: Candidate) -> Tuple[str, str]:
        return (candidate.savedmodel.path, candidate.model_path)

    def _load_counting_failures(self, candidate: Candidate) -> LoadedVersion:
        """Loads; a failure is counted, logged and backed off (per version), and re-raised."""
        identity = self._identity(candidate)
        try:
            loaded = self._loader.load(candidate)
        except ModelLoadError as error:
            previous = self._failures.get(identity)
            count = previous.count + 1 if previous else 1
            delay = min(max(self.config.effective_poll_interval, 1.0) * 2 ** (count - 1), MAX_RETRY_BACKOFF_SECONDS)
            self._failures[identity] = _Failure(count, time.monotonic() + delay)
            self._updates_failed += 1
            logger.warning("%s; still serving %s; retrying in %.0f s", error, self._serving.candidate.describe(), delay)
            model = self._model
            if model is not None:
                model.set_model_info(self._model_info_bytes())
            raise
        self._failures.pop(identity, None)
        return loaded

    def _model_info_bytes(self) -> bytes:
        record = self._serving
        candidate = record.candidate
        return predict_pb2.ServingModelInfo(
            model_path=candidate.model_path, savedmodel_dir=candidate.savedmodel.path,
            signature_name=self.config.signature_name,
            version_step=candidate.checkpoint.step if candidate.checkpoint else -1,
            load_time_unix_ms=record.load_time_unix_ms, load_duration_ms=record.load_duration_ms,
            updates_applied=self._updates_applied, updates_failed=self._updates_failed,
            delta_step=-1, savedmodel_version=candidate.savedmodel.version,
            pinned=self._pin is not None).SerializeToString()

    def _install(self, loaded: LoadedVersion) -> None:
        """Makes `loaded` serve. Only the data plane keeps the servable: once swapped out, it is freed
        when its last request ends."""
        with self._state_lock:
            model = self._live_model()  # closed meanwhile: the load is discarded
            self._serving = loaded.record
            if loaded.record.candidate not in self._history:
                self._history.append(loaded.record.candidate)
                self._history.sort(key=lambda c: c.key)
            self._trim_history()
            model.install(loaded.servable, self._model_info_bytes())
            self._signature = None
        logger.info("serving %s", loaded.record.candidate.describe())

    def _trim_history(self) -> None:
        """Keeps the serving version and the `rollback_keep` newest others."""
        others = [c for c in self._history if c != self._serving.candidate]
        keep = set(others[-self.config.rollback_keep:]) | {self._serving.candidate}
        self._history = [c for c in self._history if c in keep]
