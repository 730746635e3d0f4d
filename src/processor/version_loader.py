"""Turns a config and a discovered checkpoint into a loaded servable (the data plane does the work)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Dict, Optional

from . import _core
from .checkpoint_discovery import CheckpointVersion
from .config import ProcessorConfig
from .errors import ModelLoadError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedVersion:
    servable: _core.Servable
    model_path: str          # checkpoint prefix, or the SavedModel dir when no checkpoint is restored
    step: int                # -1 without a checkpoint
    load_time_unix_ms: int   # when loading finished
    load_duration_ms: int


def session_options(config: ProcessorConfig) -> Dict[str, str]:
    """The load options the data plane takes for the config's thread settings."""
    return {
        "intra_op_threads": str(config.intra_op_parallelism_threads),
        "inter_op_threads": str(config.inter_op_parallelism_threads),
        "use_per_session_threads": "1" if config.use_per_session_threads else "0",
        "inline_execute": "1" if config.enable_inline_execute else "0",
    }


def load_version(config: ProcessorConfig, checkpoint: Optional[CheckpointVersion]) -> LoadedVersion:
    options = {"savedmodel_dir": config.savedmodel_dir, "signature_name": config.signature_name,
               **session_options(config)}
    if checkpoint is not None:
        options["checkpoint_prefix"] = checkpoint.prefix
    what = checkpoint.prefix if checkpoint else config.savedmodel_dir
    started = time.monotonic()
    try:
        servable = _core.load_servable(options)
    except _core.LoadError as e:
        raise ModelLoadError(f"cannot load model version {what}: {e}") from None
    duration_ms = int((time.monotonic() - started) * 1000)
    logger.info("loaded model version %s in %d ms", what, duration_ms)
    return LoadedVersion(servable=servable, model_path=what, step=checkpoint.step if checkpoint else -1,
                         load_time_unix_ms=int(time.time() * 1000), load_duration_ms=duration_ms)
