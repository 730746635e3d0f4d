"""The models a server serves side by side, as TF Serving's ServerCore keeps them: one entry per model of
a ModelServerConfig, its versions kept by its version policy, and the routes (model, version, label ->
model handle) that the gRPC server (C++) and the REST server share.

A model whose policy keeps its newest version alone (`latest`, 1 version: the default) is one Processor,
which swaps each newer version in place (with deltas, rollback and the feature store). Any other policy
(`specific`, `all`, `latest` N > 1) keeps one Processor per version (config `savedmodel_version`),
loaded and unloaded as the versions under `base_path` come and go.

Routes change in one order: loads finish before the routes naming them are published, and a version
leaves the routes (which waits for the requests still using them) before it is closed.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from ..backoff import RetryBackoff
from ..errors import ConfigError, ProcessorError, RequestError
from ..facade import Processor
from ..formats.tf_serving import ModelConfig
from ..updater import PollingThread

logger = logging.getLogger(__name__)

# ModelVersionStatus.State (tensorflow_serving/apis/get_model_status.proto)
AVAILABLE = "AVAILABLE"
END = "END"


@dataclass
class VersionStatus:
    """One version's state, as GetModelStatus and GET /v1/models/NAME report it."""
    version: int
    state: str
    error: str = ""


class NotServed(RequestError):
    """The request names a model, version or label this server does not serve: TF Serving's code and
    message (404 NOT_FOUND, or 400 INVALID_ARGUMENT for an unknown label)."""


def served_version(processor: Processor) -> int:
    """The version TF Serving's API shows: the checkpoint step, else the SavedModel's integer version
    (0 for an unversioned SavedModel without checkpoints). The engine's copy: ServedVersionNumber
    (cpp/serving/version_manager.h), tied to this one by tests/test_tf_serving_predict.py."""
    info = processor.model_info()
    if info.version_step >= 0:
        return info.version_step
    return max(info.savedmodel_version, 0)


def _not_found(name: str, version: Optional[int] = None) -> NotServed:
    what = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
    return NotServed(404, f"Servable not found for request: {what}")


@dataclass
class ServedModel:
    """One model: its TF Serving config, the Processor config its versions load with, and what serves."""
    spec: ModelConfig
    document: dict  # the Processor config of every version (savedmodel_dir = base_path)
    single: Optional[Processor] = None  # `latest` 1: one Processor swapping in place
    versions: Dict[int, Processor] = field(default_factory=dict)  # any other policy: one per version
    failures: Dict[int, str] = field(default_factory=dict)  # versions that failed to load, and why
    # When a failed version is tried again: backoff.py's rule, from the poll interval up to 5 minutes.
    backoff: RetryBackoff = field(default_factory=lambda: RetryBackoff(1.0, 300.0))
    _listing: Optional[tuple] = field(default=None, repr=False)  # (store, restores_variables): complete_versions()

    @property
    def swaps_in_place(self) -> bool:
        policy = self.spec.version_policy
        return policy.kind == "latest" and policy.num_versions == 1

    def wanted(self, available: List[int]) -> List[int]:
        """The versions the policy keeps out of the complete ones `available` (ascending)."""
        policy = self.spec.version_policy
        if policy.kind == "specific":
            return [v for v in policy.versions if v in available]
        if policy.kind == "all":
            return list(available)
        return available[-policy.num_versions:]

    def complete_versions(self) -> List[int]:
        """The complete integer versions under base_path now, ascending; the store to list them with is
        opened on the first call and kept (every poll lists)."""
        from ..config import parse_config
        from ..loading.savedmodels import list_savedmodel_versions
        from ..stores.registry import open_model_store
        if self._listing is None:
            config = parse_config({**self.document, "savedmodel_version": -1})
            self._listing = (open_model_store(config), not config.checkpoint_dir)
        store, restores_variables = self._listing
        listed = list_savedmodel_versions(store, self.spec.base_path, restores_variables=restores_variables)
        return [v.version for v in listed if v.complete]

    def processors(self) -> List[Processor]:
        return [self.single] if self.single is not None else list(self.versions.values())


class ModelRegistry:
    """Models by name, their version policies applied every `poll_seconds`, and `publish(routes)` called
    whenever what serves changes (the gRPC server's set_routes)."""

    def __init__(self, models: List[ModelConfig], base: Mapping, overrides: Mapping[str, Mapping] = None,
                 poll_seconds: float = 5.0, publish: Callable[[dict], None] = lambda routes: None):
        self._base = dict(base)
        self._overrides = {name: dict(values) for name, values in (overrides or {}).items()}
        self._publish = publish
        # Two locks: changes (reloads, polls, close) take turns under _changes, held across loads; _lock
        # guards what requests read (_models, each model's versions and spec) and is held only briefly,
        # so that requests never wait for a load.
        self._changes = threading.Lock()
        self._lock = threading.Lock()
        self._models: Dict[str, ServedModel] = {}
        try:
            errors = self._apply(models, reloading=False)
        except BaseException:
            self.close()
            raise
        if errors:
            self.close()
            raise ProcessorError("; ".join(errors))
        self._poller = PollingThread(poll_seconds, self.poll, name="processor-model-versions") \
            if poll_seconds > 0 else None
        if self._poller:
            self._poller.start()

    # ---- what serves

    def names(self) -> List[str]:
        with self._lock:
            return sorted(self._models)

    def resolve(self, name: str, version: Optional[int] = None, label: Optional[str] = None) \
            -> Tuple[Processor, Optional[int]]:
        """The Processor answering a request for `name` (and a version or a label), and the version it must
        answer with (None: whichever it serves). Raises NotServed with TF Serving's messages."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise _not_found(name, version)
            if label is not None:
                if label not in model.spec.version_labels:
                    raise NotServed(400, f"Unrecognized servable version label: {label}")
                version = model.spec.version_labels[label]
            if model.single is not None:
                return model.single, version
            if version is None:
                if not model.versions:
                    raise _not_found(name)
                return model.versions[max(model.versions)], None
            if version not in model.versions:
                raise _not_found(name, version)
            return model.versions[version], version

    def status(self, name: str, version: Optional[int] = None) -> List[VersionStatus]:
        """Each version's state (GetModelStatus); raises NotServed with TF Serving's messages."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise NotServed(404, f"Could not find any versions of model {name}")
            if model.single is not None:
                states = [VersionStatus(served_version(model.single), AVAILABLE)]
            else:
                states = [VersionStatus(v, AVAILABLE) for v in sorted(model.versions)]
                states += [VersionStatus(v, END, error) for v, error in sorted(model.failures.items())
                           if v not in model.versions]
        if version is not None:
            states = [s for s in states if s.version == version]
            if not states:
                raise NotServed(404, f"Could not find version {version} of model {name}")
        if not states:
            raise NotServed(404, f"Could not find any versions of model {name}")
        return states

    def routes(self) -> dict:
        """What the gRPC server routes by: {name: {"latest", "versions", "labels"}}."""
        with self._lock:
            routes = {}
            for name, model in self._models.items():
                versions = {v: p.handle for v, p in model.versions.items()}
                latest = model.single.handle if model.single is not None else \
                    versions[max(versions)] if versions else 0
                routes[name] = {"latest": latest, "versions": versions, "labels": dict(model.spec.version_labels)}
            return routes

    # ---- changes

    def reload(self, models: List[ModelConfig]) -> List[str]:
        """Serves `models` from now on (a config reload): new models load, removed ones unload, changed ones
        are replaced (the new one loads before the old one goes); the others are not touched. All or
        nothing: when a model fails to load, nothing changes, and the errors are returned."""
        return self._apply(models)

    def poll(self) -> None:
        """Applies the version policies to the versions now under each base_path."""
        with self._changes:
            for model in list(self._models.values()):
                if not model.swaps_in_place:
                    self._sync_versions(model)

    def close(self) -> None:
        poller = getattr(self, "_poller", None)
        if poller:
            poller.stop()
        with self._changes:
            with self._lock:
                models, self._models = self._models, {}
            self._publish_routes()
            for model in models.values():
                self._close(model)

    # ---- internals

    def _apply(self, models: List[ModelConfig], reloading: bool = True) -> List[str]:
        """All or nothing: every new or changed model loads first; if one fails, those loaded are closed and
        what served before keeps serving. Then the swap: routes published, retired models closed."""
        with self._changes:  # _models changes only under it: read here without _lock
            wanted = {m.name: m for m in models}
            staged: Dict[str, ServedModel] = {}
            relabelled: Dict[str, ModelConfig] = {}
            errors = []
            for name, spec in wanted.items():
                current = self._models.get(name)
                if current is not None and current.spec == spec:
                    continue
                if current is not None and (current.spec.base_path, current.spec.version_policy) == \
                        (spec.base_path, spec.version_policy):
                    relabelled[name] = spec  # labels alone changed: routes only
                    continue
                model = ServedModel(spec, self._document(spec, reloading))
                try:
                    self._load(model)
                    staged[name] = model
                except (ProcessorError, OSError) as e:
                    errors.append(f"model {name!r}: {e}")
                    self._close(model)
            if errors:
                for model in staged.values():
                    self._close(model)
                return errors
            with self._lock:
                retired = [self._models[name] for name in staged if name in self._models]
                retired += [self._models.pop(name) for name in list(self._models) if name not in wanted]
                for name, spec in relabelled.items():
                    self._models[name].spec = spec
                self._models.update(staged)
            self._publish_routes()  # waits for requests on the retired versions' routes
            for model in retired:
                self._close(model)
                logger.info("model %r unloaded", model.spec.name)
        return []

    @staticmethod
    def _close(model: ServedModel) -> None:
        for processor in model.processors():
            processor.close()

    def _document(self, spec: ModelConfig, reloading: bool) -> dict:
        document = {**self._base, **self._overrides.get(spec.name, {})}
        if reloading:  # a model added by a reload fails at once when it has no version, unless told to wait
            document.setdefault("init_timeout_minutes", 0)
        document["savedmodel_dir"] = spec.base_path
        document["model_name"] = spec.name
        return document

    def _load(self, model: ServedModel) -> None:
        if model.swaps_in_place:
            model.single = Processor(model.document)
            logger.info("model %r serving from %s", model.spec.name, model.spec.base_path)
        else:
            self._sync_versions(model, publish=False)
            if model.spec.version_policy.kind == "specific" and not model.versions:
                raise ConfigError("model_config_file", f"none of versions {list(model.spec.version_policy.versions)} "
                                  f"is complete under {model.spec.base_path}")

    def _sync_versions(self, model: ServedModel, publish: bool = True) -> None:
        try:
            wanted = model.wanted(model.complete_versions())
        except (OSError, ProcessorError) as e:
            logger.warning("model %r: cannot list the versions under %s: %s", model.spec.name, model.spec.base_path, e)
            return
        loaded = {}
        for version in wanted:
            if version in model.versions or model.backoff.waiting(version):
                continue
            try:
                loaded[version] = Processor({**model.document, "savedmodel_version": version, "init_timeout_minutes": 0})
                model.failures.pop(version, None)
                model.backoff.succeeded(version)
                logger.info("model %r version %d serving", model.spec.name, version)
            except ProcessorError as e:
                delay = model.backoff.failed(version)
                if model.failures.get(version) != str(e):  # said once per distinct failure
                    logger.error("model %r version %d failed to load (retrying in %.0f s, then less often): %s",
                                 model.spec.name, version, delay, e)
                model.failures[version] = str(e)
        gone = [v for v in model.versions if v not in wanted]
        if not (loaded or gone):
            return
        with self._lock:
            model.versions.update(loaded)
            retired = [model.versions.pop(v) for v in gone]
        if publish:
            self._publish_routes()
        for processor in retired:
            processor.close()
        for version in gone:
            logger.info("model %r version %d unloaded", model.spec.name, version)

    def _publish_routes(self) -> None:
        self._publish(self.routes())
