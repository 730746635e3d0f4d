"""Incremental (delta) checkpoints: finding them, planning their application, and writing them.

Layout (DeepRec's): next to a full checkpoint, `<run dir>/.incremental_checkpoint/` holds a `checkpoint`
state file and `model.ckpt-<step>.index/.data-*` bundles with steps above the full version's. A delta
holds, for a variable V updated by rows, `V-sparse_incr_keys` (int64 row ids) and `V-sparse_incr_values`
([n, ...] rows); for a variable saved whole, `V` itself. A partitioned variable saved whole is its full
name with a slice per part (as tf.train.Saver and DeepRec's incremental saver write it): every part of
the graph is then applied from its slice. Variables not in a delta keep their values.
Deltas apply in step order, each on top of the previous one.

Training jobs write deltas with save_incremental_checkpoint() (TensorFlow is imported only there).
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from .checkpoint_discovery import CheckpointVersion, check_version, read_state_file
from .checkpoint_index import CheckpointIndexError, read_index
from .errors import ModelLoadError
from .stores import LocalModelStore, ModelStore

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


def _write_state(directory: str, prefixes: List[str]) -> None:
    lines = [f'model_checkpoint_path: "{os.path.basename(prefixes[-1])}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in prefixes]
    temporary = os.path.join(directory, "checkpoint.tmp")
    with open(temporary, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(temporary, os.path.join(directory, "checkpoint"))  # readers see the old or the new file


_SAVE_GRAPHS: Dict[Tuple, object] = {}


def _save_tensors(prefix: str, tensors: Mapping[str, np.ndarray]) -> None:
    """Writes a TF checkpoint bundle with a private graph and session (the caller's graph is untouched)."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    names = sorted(tensors)
    key = tuple((n, tensors[n].dtype.str) for n in names)
    if key not in _SAVE_GRAPHS:
        graph = tf.Graph()
        with graph.as_default():
            path = tf1.placeholder(tf.string, [])
            inputs = [tf1.placeholder(tf.as_dtype(tensors[n].dtype)) for n in names]
            save = tf.raw_ops.SaveV2(prefix=path, tensor_names=names, shape_and_slices=[""] * len(names), tensors=inputs)
        _SAVE_GRAPHS[key] = (tf1.Session(graph=graph), path, inputs, save)
    session, path, inputs, save = _SAVE_GRAPHS[key]
    session.run(save, {path: prefix, **{p: tensors[n] for p, n in zip(inputs, names)}})


def save_incremental_checkpoint(session, checkpoint_dir: str, global_step: int,
                                changed_rows: Mapping[object, Iterable[int]],
                                whole_variables: Iterable[object] = (), keep: int = 20) -> str:
    """Writes a delta for a training job: the rows `changed_rows` names of each variable (a tf.Variable
    or a variable name -> row ids), and `whole_variables` entirely, into
    `<checkpoint_dir>/.incremental_checkpoint/model.ckpt-<global_step>`. The state file is updated last,
    so a processor polling the directory never sees a half-written delta. Returns the prefix.

    Reads each variable through `session`, once; the training graph gets no new ops."""
    directory = os.path.join(checkpoint_dir, INCREMENTAL_DIR)
    os.makedirs(directory, exist_ok=True)
    import tensorflow as tf
    by_name = {v.op.name: v for v in session.graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)}

    def variable(v):
        name = v if isinstance(v, str) else v.op.name
        if name not in by_name:
            raise ValueError(f"the session's graph has no global variable '{name}'")
        return name

    rows = {variable(v): np.unique(np.asarray(list(ids), dtype=np.int64)) for v, ids in changed_rows.items()}
    whole = [variable(v) for v in whole_variables]
    # Fetching the Variable objects uses their existing read ops: the training graph gets no new ops.
    values = session.run({name: by_name[name] for name in list(rows) + whole})
    tensors: Dict[str, np.ndarray] = {}
    for name, ids in rows.items():
        tensors[name + KEYS_SUFFIX] = ids
        tensors[name + VALUES_SUFFIX] = np.ascontiguousarray(values[name][ids])
    for name in whole:
        tensors[name] = np.asarray(values[name])
    prefix = os.path.join(directory, f"model.ckpt-{int(global_step)}")
    _save_tensors(prefix, tensors)
    existing = [p for p in read_state_file(LocalModelStore(), directory) if p != prefix]
    _write_state(directory, (existing + [prefix])[-keep:])
    return prefix
