"""Processor: a served model, from Python. The same object backs the C ABI's handle for C hosts."""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple, Union

import numpy as np

from . import _core, predict_pb2, tensors
from .checkpoint_discovery import newest_version
from .config import ProcessorConfig, parse_config
from .errors import ConfigError, ModelLoadError, RequestError
from .version_loader import LoadedVersion, load_version

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

    @classmethod
    def from_bytes(cls, data: bytes) -> "ModelInfo":
        message = predict_pb2.ServingModelInfo.FromString(data)
        return cls(**{name: getattr(message, name) for name in cls.__dataclass_fields__})


def _refuse_unsupported(config: ProcessorConfig) -> None:
    if config.feature_store_type != "local":
        raise ConfigError("feature_store_type", f"'{config.feature_store_type}' is not supported yet; use 'local'")
    if config.model_store_type != "local":
        raise ConfigError("model_store_type", f"'{config.model_store_type}' is not supported yet; use 'local'")


class Processor:
    """Loads the model the config describes and serves it.

    `config` is a dict, a JSON string or the path of a JSON file. Raises ConfigError or ModelLoadError.
    """

    def __init__(self, config: Union[Mapping[str, Any], str, bytes], model_entry: str = ""):
        self.config = parse_config(config)
        self.model_entry = model_entry
        _refuse_unsupported(self.config)
        self._lock = threading.Lock()
        self._updates_applied = 0
        self._updates_failed = 0
        self._signature: Optional[Tuple[dict, Dict[str, int]]] = None
        self._serving: Optional[LoadedVersion] = None
        checkpoint = None
        if self.config.checkpoint_dir:
            checkpoint = newest_version(self.config.checkpoint_dir)
            if checkpoint is None:
                raise ModelLoadError(f"no complete checkpoint under checkpoint_dir '{self.config.checkpoint_dir}'")
        loaded = load_version(self.config, checkpoint)
        self._model: Optional[_core.Model] = _core.Model()
        self._install(loaded)

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

    # ---- lifecycle

    def update(self) -> bool:
        """Serves the newest complete checkpoint if it is newer than the one serving: loads it beside the
        serving version, then swaps atomically (requests in flight finish on the old version). Returns
        True when it swapped. A version that fails to load raises ModelLoadError and the current
        version keeps serving."""
        if not self.config.checkpoint_dir:
            return False
        with self._lock:
            self._live_model()
            checkpoint = newest_version(self.config.checkpoint_dir)
            if checkpoint is None or checkpoint.step <= self._serving.step:
                return False
            try:
                loaded = load_version(self.config, checkpoint)
            except ModelLoadError:
                self._updates_failed += 1
                self._refresh_model_info()
                raise
            self._updates_applied += 1
            self._install(loaded)
            return True

    def close(self) -> None:
        """Stops serving (process() answers 503 from now on) and releases the model once no request
        holds it. Idempotent."""
        with self._lock:
            model, self._model = self._model, None
        if model is not None:
            model.unload()
            logger.info("processor closed")

    def __enter__(self) -> "Processor":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _live_model(self) -> _core.Model:
        model = self._model
        if model is None:
            raise RequestError(503, "the processor is closed")
        return model

    def _model_info_bytes(self) -> bytes:
        loaded = self._serving
        return predict_pb2.ServingModelInfo(
            model_path=loaded.model_path, savedmodel_dir=self.config.savedmodel_dir,
            signature_name=self.config.signature_name, version_step=loaded.step,
            load_time_unix_ms=loaded.load_time_unix_ms, load_duration_ms=loaded.load_duration_ms,
            updates_applied=self._updates_applied, updates_failed=self._updates_failed).SerializeToString()

    def _install(self, loaded: LoadedVersion) -> None:
        self._serving = loaded
        self._live_model().install(loaded.servable, self._model_info_bytes())
        self._signature = None
        logger.info("serving %s (step %d)", loaded.model_path, loaded.step)

    def _refresh_model_info(self) -> None:
        self._live_model().set_model_info(self._model_info_bytes())
