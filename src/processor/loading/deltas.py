"""Incremental (delta) checkpoints on the serving side: finding them and planning their application.

Layout (DeepRec's): next to a full checkpoint, `<run dir>/.incremental_checkpoint/` holds a `checkpoint`
state file and `model.ckpt-<step>.index/.data-*` bundles with steps above the full version's. A delta
holds, for a variable V updated by rows, `V-sparse_incr_keys` (int64 row ids) and `V-sparse_incr_values`
([n, ...] rows); for a variable saved whole, `V` itself. A partitioned variable saved whole is its full
name with a slice per part (as tf.train.Saver and DeepRec's incremental saver write it): every part of
the graph is then applied from its slice. Variables not in a delta keep their values.
Deltas apply in step order, each on top of the previous one.

Training jobs write deltas with processor.training.save_incremental_checkpoint().
"""
from __future__ import annotations

import os
from typing import Iterable, List, Optional, Tuple

from ..errors import ModelLoadError
from ..formats.checkpoint_index import CheckpointIndexError, read_index
from ..stores import LocalModelStore, ModelStore
from .checkpoints import CheckpointVersion, check_version, read_state_file

INCREMENTAL_DIR = ".incremental_checkpoint"
KEYS_SUFFIX = "-sparse_incr_keys"
VALUES_SUFFIX = "-sparse_incr_values"


def incremental_dir(full_prefix: str) -> str:
    return os.path.join(os.path.dirname(full_prefix), INCREMENTAL_DIR)


def pending_deltas(full_prefix: str, after_step: int, store: Optional[ModelStore] = None) -> List[CheckpointVersion]:
    """Deltas of the run holding `full_prefix` with a step above `after_step`, oldest first. Stops at the
    first incomplete one: later deltas build on it."""
    store = store or LocalModelStore()
    directory = incremental_dir(full_prefix)
    versions = sorted((check_version(store, p) for p in read_state_file(store, directory)), key=lambda v: v.step)
    pending = []
    for version in versions:
        if version.step <= after_step:
            continue
        if not version.complete:
            break
        pending.append(version)
    return pending


def plan_delta(prefix: str, graph_variables: Iterable[Tuple[str, str]]) -> List[Tuple[str, bool, int]]:
    """(variable, sparse, key dtype) for every variable of the graph that the delta at `prefix` changes;
    `graph_variables`: (name, the full variable's name for a part of a partitioned one, else "").
    Tensors for variables the serving graph lacks (optimizer slots, training-only state) are ignored."""
    try:
        tensors = read_index(prefix)
    except CheckpointIndexError as e:
        raise ModelLoadError(str(e)) from None
    variables, parts = set(), {}
    for name, saved_name in graph_variables:
        variables.add(name)
        if saved_name:
            parts.setdefault(saved_name, []).append(name)
    plan = []
    for name, entry in sorted(tensors.items()):
        if name.endswith(KEYS_SUFFIX):
            variable = name[: -len(KEYS_SUFFIX)]
            if variable + VALUES_SUFFIX not in tensors:
                raise ModelLoadError(f"delta {prefix}: {name} has no {variable + VALUES_SUFFIX}")
            if variable in variables:
                plan.append((variable, True, entry.dtype))
        elif name.endswith(VALUES_SUFFIX):
            if name[: -len(VALUES_SUFFIX)] + KEYS_SUFFIX not in tensors:
                raise ModelLoadError(f"delta {prefix}: {name} has no row ids")
        elif name in variables:
            plan.append((name, False, 0))
        elif name in parts:  # a partitioned variable saved whole: each part is its slice
            plan.extend((part, False, 0) for part in sorted(parts[name]))
    return plan


# ---- the writer, for training jobs
