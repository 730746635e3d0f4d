"""The training side: what a training job calls to write what Processor serves (deltas in DeepRec's
layout, checkpoint state files, raw checkpoint bundles). These import TensorFlow; serving code never
imports this module.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Mapping, Tuple

import numpy as np

from .loading.checkpoints import read_state_file
from .loading.deltas import INCREMENTAL_DIR, KEYS_SUFFIX, VALUES_SUFFIX
from .stores import LocalModelStore


def write_checkpoint_state(directory: str, prefixes: List[str]) -> None:
    """Writes a `checkpoint` state file naming `prefixes` (the last one newest), atomically: a reader
    sees the old file or the new one."""
    lines = [f'model_checkpoint_path: "{os.path.basename(prefixes[-1])}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in prefixes]
    temporary = os.path.join(directory, "checkpoint.tmp")
    with open(temporary, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(temporary, os.path.join(directory, "checkpoint"))  # readers see the old or the new file


_SAVE_GRAPHS: Dict[Tuple, object] = {}


def save_tensors(prefix: str, tensors: Mapping[str, np.ndarray]) -> None:
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
    `<checkpoint_dir>/.incremental_checkpoint/incremental_model.ckpt-<global_step>` (DeepRec's names,
    tensorflow/python/training/incremental_saver.py). The state file is updated last,
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
    prefix = os.path.join(directory, f"incremental_model.ckpt-{int(global_step)}")
    save_tensors(prefix, tensors)
    existing = [p for p in read_state_file(LocalModelStore(), directory) if p != prefix]
    write_checkpoint_state(directory, (existing + [prefix])[-keep:])
    return prefix
