"""Finds the version to serve and loads it: discovery, the data plane's load, warmup."""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

from .. import _core, control_pb2
from ..config import ProcessorConfig
from ..errors import ModelLoadError, StoreError
from ..feature_store import tier_files
from ..feature_store.store import FeatureStore, store_version
from ..stores import open_model_store
from . import control
from .checkpoints import STATE_FILE, CheckpointVersion, list_versions, newest_version
from .deltas import pending_deltas
from .savedmodels import SavedModelVersion, newest_savedmodel
from .warmup import WarmupRequests, run_warmup, warmup_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """Where a version lives: a SavedModel and (optionally) a checkpoint to restore into it."""
    savedmodel: SavedModelVersion
    checkpoint: Optional[CheckpointVersion]

    @property
    def key(self) -> Tuple[int, int]:
        """Versions are ordered by SavedModel version, then checkpoint step."""
        return (self.savedmodel.version, self.checkpoint.step if self.checkpoint else -1)

    @property
    def model_path(self) -> str:
        return self.checkpoint.prefix if self.checkpoint else self.savedmodel.path

    @property
    def identity(self) -> Tuple[str, str]:
        """What failures are counted and backed off by: the SavedModel and the checkpoint (or SavedModel)."""
        return (self.savedmodel.path, self.model_path)

    def describe(self) -> str:
        """The checkpoint (or SavedModel) served, with a versioned SavedModel's version directory when a
        checkpoint is restored into it."""
        if self.savedmodel.version < 0 or self.checkpoint is None:
            return self.model_path
        return f"{self.savedmodel.path} + {self.model_path}"


@dataclass(frozen=True)
class VersionRecord:
    """What the control plane keeps of a version once the data plane holds it."""
    candidate: Candidate
    load_time_unix_ms: int   # when loading finished
    load_duration_ms: int    # load, restore and warmup


@dataclass(frozen=True)
class LoadedVersion:
    servable: _core.Servable
    record: VersionRecord


def store_version_of(candidate: Candidate) -> int:
    """The version number a feature store keeps `candidate`'s tables under."""
    return store_version(candidate.savedmodel.version, candidate.checkpoint.step if candidate.checkpoint else None)


class VersionLoader:
    """Finds versions in the model store and loads them. A remote store's versions are downloaded into
    the local cache first; candidates keep their store paths (what model info and logs show), and
    `localize` says where their files are on this machine."""

    def __init__(self, config: ProcessorConfig):
        self.config = config
        self.store = open_model_store(config)
        self.cache = None
        if self.store.is_remote:
            # Imported here: hashing loads OpenSSL, which a host that links TensorFlow itself (BoringSSL's
            # symbols in its global scope) cannot load; local stores never need it.
            from ..stores.cache import ModelCache, default_cache_dir
            self.cache = ModelCache(self.store, config.local_cache_dir or default_cache_dir(),
                                    config.checkpoint_dir or config.savedmodel_dir, config.download_threads)
        self._warmup = WarmupRequests()
        self.feature_store = FeatureStore(config) if config.uses_feature_store else None

    def discover(self) -> Optional[Candidate]:
        """The newest complete version in the store, or None. A remote store is listed once here
        (StoreError when that fails); deltas are then found in the same listing."""
        self.store.refresh()
        savedmodel = self._newest_savedmodel()
        if savedmodel is None:
            return None
        checkpoint = None
        if self.config.checkpoint_dir:
            checkpoint = newest_version(self.config.checkpoint_dir, self.store)
            if checkpoint is None:
                return None
        return Candidate(savedmodel, checkpoint)

    def pending_deltas(self, candidate: Candidate, after_step: int) -> List[CheckpointVersion]:
        """The deltas of `candidate`'s run above `after_step`, as of the last discover()."""
        return pending_deltas(candidate.checkpoint.prefix, after_step, self.store)

    def localize(self, candidate: Candidate) -> Candidate:
        """The candidate with the paths of its local files (downloaded first from a remote store)."""
        if self.cache is None:
            return candidate
        checkpoint = candidate.checkpoint
        if checkpoint is not None:
            checkpoint = dataclasses.replace(checkpoint, prefix=self.cache.checkpoint(checkpoint.prefix))
        return Candidate(dataclasses.replace(candidate.savedmodel, path=self.cache.savedmodel(candidate.savedmodel.path)),
                         checkpoint)

    def localize_delta(self, delta: CheckpointVersion) -> str:
        """The local prefix of a delta's files."""
        return self.cache.checkpoint(delta.prefix) if self.cache is not None else delta.prefix

    def retain(self, candidates: Iterable[Candidate]) -> None:
        """Frees the cached files of every version but these."""
        if self.cache is not None:
            self.cache.retain(path for c in candidates
                              for path in (c.savedmodel.path, c.checkpoint.prefix if c.checkpoint else None) if path)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        if self.feature_store is not None:
            self.feature_store.close()

    def _newest_savedmodel(self) -> Optional[SavedModelVersion]:
        # With a checkpoint_dir the checkpoint is restored: the SavedModel's own variables are not needed.
        return newest_savedmodel(self.config.savedmodel_dir, self.store,
                                 restores_variables=not self.config.checkpoint_dir,
                                 only_version=self.config.savedmodel_version)

    def explain_missing(self) -> str:
        store = self.store
        if self._newest_savedmodel() is None:
            if self.config.savedmodel_version >= 0:
                return (f"no complete SavedModel version {self.config.savedmodel_version} in savedmodel_dir "
                        f"'{self.config.savedmodel_dir}' (savedmodel_version)")
            return (f"no SavedModel in savedmodel_dir '{self.config.savedmodel_dir}' (neither a saved_model.pb "
                    f"nor a complete integer version directory)")
        reasons = []
        state = store.join(self.config.checkpoint_dir, STATE_FILE)
        try:
            store.read_text(state)
        except FileNotFoundError:
            pass
        except OSError as e:
            reasons.append(f"its state file {state} cannot be read ({e.strerror})")
        except UnicodeDecodeError:
            reasons.append(f"its state file {state} is not text")
        except StoreError as e:
            reasons.append(f"its state file cannot be read: {e}")
        reasons += [f"{v.prefix} is incomplete: {v.reason}"
                    for v in list_versions(store, self.config.checkpoint_dir) if not v.complete]
        return f"no complete checkpoint under checkpoint_dir '{self.config.checkpoint_dir}'" + \
            "".join(f"; {reason}" for reason in reasons)

    def _table_sources(self, candidate: Candidate, local: Candidate, plan: _core.LoadPlan) -> control_pb2.TableSources:
        """Where the feature store's tables of a planned load come from (none without a feature store)."""
        if self.feature_store is None:
            return control_pb2.TableSources()
        prefix = local.checkpoint.prefix if local.checkpoint is not None else \
            os.path.join(local.savedmodel.path, "variables", "variables")
        try:
            return self.feature_store.prepare(store_version_of(candidate), candidate.savedmodel.path, prefix,
                                              control.planned_embeddings(plan))
        except ModelLoadError as e:
            raise ModelLoadError(f"cannot load model version {candidate.describe()}: feature store: {e}") from None

    def load(self, candidate: Candidate) -> LoadedVersion:
        """Downloads (from a remote store), loads, restores and warms up a version; ModelLoadError says
        which version and why."""
        what = candidate.describe()
        started = time.monotonic()
        local = self.localize(candidate)
        request = control.load_request(self.config, local.savedmodel.path,
                                       local.checkpoint.prefix if local.checkpoint is not None else None,
                                       self.feature_store.request() if self.feature_store is not None else None, what)
        try:
            plan = control.plan_load(request)
            sources = self._table_sources(candidate, local, plan)
            try:
                servable = plan.load(sources.SerializeToString())
            finally:
                tier_files.remove(sources)
        except _core.LoadError as e:
            raise ModelLoadError(f"cannot load model version {what}: {e}") from None
        interface, reason = servable.run_interface
        if interface != "callable":
            logger.warning("model version %s runs through TF_SessionRun, which is slower per request: %s", what, reason)
        warmup_path = warmup_file(self.config.warmup_file_name, local.savedmodel.path) \
            if self.config.enable_model_warmup else None
        if warmup_path:
            run_warmup(servable, self._warmup.get(warmup_path), self.config.warmup_iterations, what)
        duration_ms = int((time.monotonic() - started) * 1000)
        logger.info("loaded model version %s in %d ms", what, duration_ms)
        return LoadedVersion(servable, VersionRecord(candidate, int(time.time() * 1000), duration_ms))
