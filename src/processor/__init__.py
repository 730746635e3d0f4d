"""Processor: an embeddable serving library for TensorFlow recommendation models.

    import processor
    with processor.Processor({"savedmodel_dir": ..., "checkpoint_dir": ...}) as p:
        code, response = p.process(request_bytes)
        outputs = p.predict({"user_id": np.array([1, 2])})
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Tuple

# TensorFlow's INFO lines (its CPU banner, each SavedModel reader step) stay out of the host's log unless
# asked for (TF_CPP_MIN_LOG_LEVEL=0): TensorFlow reads the variable once, as its libraries load, which
# happens below (processor._core). The C ABI's shim does the same for C hosts (cpp/shim/serving_processor.c).
QUIET_TF_LOG_LEVEL = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_TF_LOG_LEVEL)

from .config import ProcessorConfig, parse_config  # noqa: E402
from .errors import ConfigError, ModelLoadError, ProcessorError, RequestError  # noqa: E402
from .facade import ModelInfo, Processor  # noqa: E402
from .request_formats import FORMAT_DEEPREC, FORMAT_TF_SERVING_PREDICT  # noqa: E402

__all__ = ["__version__", "Processor", "ProcessorConfig", "ModelInfo", "parse_config", "ProcessorError", "ConfigError",
           "ModelLoadError", "RequestError", "library_path", "include_dir", "initialize", "process",
           "get_serving_model_info", "get_metrics", "finalize"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("processor")  # setup.py takes it from include/processor.h's PROCESSOR_VERSION
    except PackageNotFoundError:
        return "unknown"


__version__ = _version()


def library_path() -> str:
    """Absolute path of libserving_processor.so, for hosts that dlopen() it."""
    return os.path.join(_PACKAGE_DIR, "libserving_processor.so")


def include_dir() -> str:
    """Directory holding processor.h, for hosts that build against the installed package."""
    return os.path.join(_PACKAGE_DIR, "include")


# ---- the C ABI, mirrored for hosts written in Python


def initialize(model_entry: str, model_config: str) -> Tuple[Optional[Processor], int]:
    """Returns (model, 0), or (None, -1) with the reason logged, like the C ABI."""
    try:
        return Processor(model_config, model_entry=model_entry), 0
    except ProcessorError as e:
        logging.getLogger(__name__).error("initialize failed: %s", e)
        return None, -1


def process(model: Optional[Processor], input_data: bytes) -> Tuple[int, bytes]:
    if model is None:
        return 503, b"model_buf is NULL: initialize() failed or was not called"
    return model.process(input_data)


def get_serving_model_info(model: Optional[Processor]) -> Tuple[int, bytes]:
    if model is None:
        return 503, b"model_buf is NULL: initialize() failed or was not called"
    return model.serving_model_info()


def get_metrics(model: Optional[Processor]) -> Tuple[int, bytes]:
    if model is None:
        return 503, b"model_buf is NULL: initialize() failed or was not called"
    try:
        return 200, model.metrics().encode("utf-8")
    except RequestError as e:
        return e.code, e.message.encode("utf-8")


def finalize(model: Optional[Processor]) -> None:
    if model is not None:
        model.close()
