"""Which SavedModel serves: `savedmodel_dir` itself, or the newest version under a versioned base.

A versioned base (the TF Serving layout) holds `<integer version>/saved_model.pb`. A version is complete
when its saved_model.pb is a readable non-empty file and, if it has a `variables/` directory, its
variables index and every data shard are readable. When its variables are what is restored (no
`checkpoint_dir`), a version whose graph has variables (a saver_def) but whose `variables/` is missing
or empty is incomplete too: copying tools write saved_model.pb first (TF Serving #1086, #631). That is
judged from a local saved_model.pb; a remote version is judged by the data plane once downloaded, which
refuses to load such a version. Directories that are not integers (temp dirs of an export in progress)
are ignored.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .. import _core
from ..stores import LocalModelStore, ModelStore
from .checkpoints import check_version

logger = logging.getLogger(__name__)

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclass(frozen=True)
class SavedModelVersion:
    path: str
    version: int      # -1 for an unversioned savedmodel_dir
    complete: bool
    reason: str = ""


def has_saved_model(store: ModelStore, path: str) -> bool:
    return any(store.is_readable_file(store.join(path, name)) for name in SAVED_MODEL_FILES)


_RESTORES: Dict[Tuple[str, int, int], bool] = {}  # (saved_model.pb, size, mtime) -> its answer: polls ask again


def graph_restores_variables(store: ModelStore, graph: str) -> bool:
    """Whether a local binary saved_model.pb describes a graph with variables to restore."""
    if store.is_remote or not graph.endswith(".pb"):
        return False
    try:
        stat = os.stat(graph)
        key = (graph, stat.st_size, stat.st_mtime_ns)
        if key not in _RESTORES:
            with open(graph, "rb") as f:
                _RESTORES[key] = _core.savedmodel_restores_variables(f.read())
        return _RESTORES[key]
    except OSError:
        return False


def check_savedmodel(store: ModelStore, path: str, version: int, restores_variables: bool = True) -> SavedModelVersion:
    graph = next((store.join(path, n) for n in SAVED_MODEL_FILES if store.is_readable_file(store.join(path, n))), None)
    if graph is None:
        return SavedModelVersion(path, version, False, "no readable saved_model.pb")
    if store.size(graph) == 0:
        return SavedModelVersion(path, version, False, f"{graph} is empty")
    variables = store.join(path, "variables")
    if store.is_dir(variables) and store.list_dir(variables):
        checked = check_version(store, store.join(variables, "variables"))
        if not checked.complete:
            return SavedModelVersion(path, version, False, f"variables: {checked.reason}")
    elif restores_variables and graph_restores_variables(store, graph):
        return SavedModelVersion(path, version, False, "its graph has variables but variables/ is missing or empty")
    return SavedModelVersion(path, version, True)


def list_savedmodel_versions(store: ModelStore, base: str, restores_variables: bool = True) -> List[SavedModelVersion]:
    versions = [check_savedmodel(store, store.join(base, name), int(name), restores_variables)
                for name in store.list_dir(base) if name.isdigit() and store.is_dir(store.join(base, name))]
    return sorted(versions, key=lambda v: v.version)


def newest_savedmodel(savedmodel_dir: str, store: Optional[ModelStore] = None,
                      restores_variables: bool = True, only_version: int = -1) -> Optional[SavedModelVersion]:
    """savedmodel_dir itself when it holds a SavedModel; else its newest complete integer version.
    `restores_variables`: the versions' own variables are restored (there is no checkpoint_dir).
    `only_version` >= 0: that integer version alone (config savedmodel_version), None until it is complete."""
    store = store or LocalModelStore()
    if only_version < 0 and has_saved_model(store, savedmodel_dir):
        return SavedModelVersion(savedmodel_dir, -1, True)
    newest = None
    for candidate in list_savedmodel_versions(store, savedmodel_dir, restores_variables):
        if only_version >= 0 and candidate.version != only_version:
            continue
        if candidate.complete:
            newest = candidate
        else:
            logger.info("skipping incomplete SavedModel version %s: %s", candidate.path, candidate.reason)
    return newest
