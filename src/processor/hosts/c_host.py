"""Entry points the C ABI calls (through the embedded interpreter) for hosts that use initialize().

The Processor objects live here, keyed by their handle, until finalize().
"""
from __future__ import annotations

import logging
import sys
import threading
from typing import Dict

from ..errors import ModelLoadError, ProcessorError, RequestError
from ..facade import Processor

logger = logging.getLogger("processor")
_live: Dict[int, Processor] = {}
_live_lock = threading.Lock()


def _ensure_logging() -> None:
    # A C host has configured no Python logging; without a handler only warnings would reach stderr.
    root = logging.getLogger()
    if not root.handlers and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[processor %(levelname).1s] %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def initialize(model_entry: str, model_config: str) -> int:
    _ensure_logging()
    try:
        processor = Processor(model_config, model_entry=model_entry)
    except ProcessorError as e:
        logger.error("initialize failed: %s", e)
        raise
    with _live_lock:
        _live[processor.handle] = processor
    return processor.handle


def finalize(handle: int) -> int:
    with _live_lock:
        processor = _live.pop(handle, None)
    if processor is None:
        logger.error("finalize: %#x is not a live model handle", handle)
        return 0
    processor.close()
    return 0


def rollback(handle: int, version: int) -> int:
    """The C ABI's rollback(): 200, or 400 (not a kept version), 500 (it no longer loads), 503 (closed)."""
    with _live_lock:
        processor = _live.get(handle)
    if processor is None:
        logger.error("rollback: %#x is not a live model handle", handle)
        return 503
    try:
        processor.rollback(None if version == -1 else version)
    except RequestError as e:
        logger.error("rollback to %d refused: %s", version, e.message)
        return e.code
    except ModelLoadError as e:
        logger.error("rollback to %d failed: %s", version, e)
        return 500
    return 200
