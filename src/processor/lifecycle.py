"""Which version serves, and every change of it: the first version, updates found by polling, deltas,
rollback and its pin, the feature store's reloads, failures and their backoff, and the model info
that says all this. The Processor facade (facade.py) drives it; the version policy
(version_policy.py) decides how a new version replaces the serving one."""
from __future__ import annotations

import logging
import threading
import time
from typing import List, Optional, Tuple

from . import _core, predict_pb2
from .backoff import RetryBackoff
from .config import ProcessorConfig
from .errors import ModelLoadError, RequestError, StoreError
from .loading import control
from .loading.deltas import plan_delta
from .loading.loader import Candidate, LoadedVersion, VersionLoader, VersionRecord, store_version_of
from .version_policy import POLICIES

logger = logging.getLogger(__name__)

MAX_RETRY_BACKOFF_SECONDS = 600.0
STORE_CHECK_SECONDS = 1.0  # how often the serving version's tables in Redis are checked for lost rows


def version_number(candidate: Candidate) -> int:
    """What rollback() and versions() call a version: its checkpoint step, else its SavedModel version."""
    return candidate.checkpoint.step if candidate.checkpoint else candidate.savedmodel.version


class VersionLifecycle:
    def __init__(self, config: ProcessorConfig, loader: VersionLoader):
        self.config = config
        self.loader = loader
        self._policy = POLICIES[config.version_policy]()
        # One load at a time: updates, rollbacks, reloads. Reentrant: unpin() updates while holding it.
        self._update_lock = threading.RLock()
        self._state_lock = threading.Lock()   # installing vs closing
        self._backoff = RetryBackoff(lambda: max(config.effective_poll_interval, 1.0), MAX_RETRY_BACKOFF_SECONDS)
        self._updates_applied = 0
        self._updates_failed = 0
        self._history: List[Candidate] = []   # loaded versions by key, the serving one included
        self._pin: Optional[Tuple[int, int]] = None  # serve nothing newer than this until a newer one appears
        self.serving: Optional[VersionRecord] = None
        # (the serving servable, its record), replaced as one so that readers without the lock (the
        # facade's signature cache) never pair one version's servable with another's record
        self._serving: Tuple[Optional[_core.Servable], Optional[VersionRecord]] = (None, None)
        self._delta_step = -1  # newest delta applied to the serving version
        self.handle: Optional[_core.ModelHandle] = None

    # ---- starting and stopping

    def first_version(self) -> Candidate:
        """The version to serve first: the newest complete one, waiting for one to appear up to
        init_timeout_minutes (-1: as long as it takes, as DeepRec does; 0: not at all), and saying what
        it waits for once a minute."""
        minutes = self.config.init_timeout_minutes
        deadline = None if minutes < 0 else time.monotonic() + minutes * 60
        interval = min(self.config.effective_poll_interval or 1.0, 5.0)
        next_report = time.monotonic()
        while True:
            candidate = self.loader.discover()
            if candidate is not None:
                return candidate
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                waited = f" (waited {minutes:g} min, init_timeout_minutes)" if minutes > 0 else ""
                raise ModelLoadError(self.loader.explain_missing() + waited)
            if now >= next_report:
                limit = "as long as it takes" if deadline is None else f"up to {minutes:g} min"
                logger.info("waiting for a version to serve (%s, init_timeout_minutes): %s", limit,
                            self.loader.explain_missing())
                next_report = now + 60
            time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - now)))

    def serve_first(self, handle: _core.ModelHandle, loaded: LoadedVersion) -> None:
        self.handle = handle
        self._serve_with_deltas(loaded)

    def close(self) -> Optional[_core.ModelHandle]:
        """Stops serving: returns the model handle to unload (None when closed already). A load in progress
        finds the lifecycle closed and discards its result."""
        with self._state_lock:
            handle, self.handle = self.handle, None
            self._serving = (None, self.serving)
        return handle

    @property
    def serving_servable(self) -> Optional[_core.Servable]:
        """The serving version's servable (to apply deltas to); None once closed."""
        return self._serving[0]

    def serving_pair(self) -> Tuple[Optional[_core.Servable], Optional[VersionRecord]]:
        """(the serving servable, its record), one consistent pair; the servable is None once closed."""
        return self._serving

    def live_handle(self) -> _core.ModelHandle:
        handle = self.handle
        if handle is None:
            raise RequestError(503, "the processor is closed")
        return handle

    # ---- what the facade asks for

    def update(self, raise_errors: bool) -> bool:
        """Serves the newest complete version when it is newer than the serving one (and no pin holds it
        back), else applies pending deltas. A failure raises when raise_errors, else it is logged."""
        with self._update_lock:
            self.live_handle()
            try:
                candidate = self.loader.discover()
            except StoreError as error:
                if raise_errors:
                    raise
                logger.warning("cannot look for new versions: %s; still serving %s", error,
                               self.serving.candidate.describe() if self.serving else "nothing")
                return False
            nothing_serves = self.serving_servable is None  # after a failed resource-preserving update
            if candidate is not None and (candidate.key > self._serving_key() or nothing_serves):
                if self._pin is not None and candidate.key <= self._pin:
                    return False
                if self._pin is not None:
                    logger.info("version %s is newer than the rollback pin: unpinning", candidate.describe())
                    self._pin = None
                return self._load_and_install(candidate, raise_errors)
            if self._pin is None:
                return self._apply_pending_deltas(raise_errors)
            return False

    def poll(self) -> None:
        """The polling thread's work: update() whose failures are logged, never raised."""
        try:
            self.update(raise_errors=False)
        except RequestError as e:
            if e.code != 503:  # 503: closed meanwhile; nothing to do
                raise

    def check_store(self) -> None:
        """Reloads the serving version (its tables imported again, its deltas written again) when its
        tables in Redis lost rows or were imported again; requests meanwhile answer 503, never rows of
        another import or default rows (cpp/feature_store/redis_table.h). With a hot-row cache, clears it
        when another replica wrote a delta (this replica forgets its own deltas' rows as it writes them)."""
        serving = self.serving
        if serving is None:
            return
        store = self.loader.feature_store
        reason = store.lost(store_version_of(serving.candidate))
        if reason is None:
            servable = self.serving_servable
            if store.deltas_changed(store_version_of(serving.candidate)) and servable is not None:
                # another replica wrote a delta: which rows, only its files say; the cache forgets all
                servable.forget_rows("", None)
            return
        with self._update_lock:
            if self.serving is not serving or self.handle is None:
                return  # another version serves, or closed, meanwhile
            if self._backoff.waiting(serving.candidate.identity):
                return  # the last reload failed: retried as failed loads are
            logger.warning("%s: loading %s again", reason, serving.candidate.describe())
            try:
                self._switch_to(serving.candidate, with_deltas=True, is_update=False)
            except ModelLoadError:
                pass  # counted, logged and backed off by _switch_to
            except RequestError as e:
                if e.code != 503:  # 503: closed meanwhile
                    raise

    def versions(self) -> List[int]:
        with self._update_lock:
            return [version_number(c) for c in self._history]

    def rollback(self, version: Optional[int]) -> None:
        with self._update_lock:
            self.live_handle()
            current = self.serving.candidate
            if version is None or version == -1:
                earlier = [c for c in self._history if c.key < current.key]
                if not earlier:
                    raise RequestError(400, "there is no earlier version to roll back to")
                target = earlier[-1]
            else:
                matches = [c for c in self._history if version_number(c) == version]
                if not matches:
                    kept = ", ".join(str(version_number(c)) for c in self._history)
                    raise RequestError(400, f"version {version} is not among the kept versions ({kept})")
                target = matches[-1]
            try:
                newest = self.loader.discover()
            except StoreError as error:  # the kept versions are cached: rollback works without the store
                logger.warning("rolling back without a new look at the store: %s", error)
                newest = None
            watermark = max([c.key for c in self._history] + ([newest.key] if newest else []))
            self._pin = watermark  # set first: the model info published at the switch says pinned
            try:
                self._switch_to(target, with_deltas=False, is_update=False)
            except ModelLoadError:
                self._pin = None
                self._publish_model_info()
                raise
            logger.info("rolled back to %s; pinned until a version newer than %s appears", target.describe(), watermark)

    def unpin(self) -> bool:
        """Lifts a rollback pin and serves the newest version; True when that swapped. One step under the
        update lock: otherwise the polling thread could swap in between, and unpin() would say it
        swapped nothing."""
        with self._update_lock:
            self._pin = None
            return self.update(raise_errors=True)

    # ---- what the version policies use

    def load_counting_failures(self, candidate: Candidate) -> LoadedVersion:
        """Loads; a failure is counted, logged and backed off (per version), and re-raised."""
        try:
            loaded = self.loader.load(candidate)
        except ModelLoadError as error:
            self.count_failure(candidate.identity, str(error))
            raise
        self._backoff.succeeded(candidate.identity)
        return loaded

    def count_failure(self, identity: Tuple[str, str], message: str) -> None:
        """Counts and logs a failed version (Candidate.identity) or delta, and backs its retries off."""
        delay = self._backoff.failed(identity)
        self._updates_failed += 1
        serving = self.serving.candidate.describe() if self.serving else "the version being loaded without it"
        logger.warning("%s; still serving %s; retrying in %.0f s", message, serving, delay)
        self._publish_model_info()

    def unload_serving(self) -> None:
        with self._state_lock:
            self.live_handle().unload()
            self._serving = (None, self.serving)  # the last reference (unload() waited for the requests on it)

    def bring_back(self, candidate: Candidate, servable: Optional[_core.Servable]) -> None:
        """Serves `candidate` again after a failed resource-preserving update: restored into `servable`
        when given, else loaded anew. If even that fails, nothing serves (503) until a poll loads a version."""
        try:
            if servable is not None:
                control.restore(servable, self.loader.localize(candidate).checkpoint.prefix, candidate.describe())
                loaded = LoadedVersion(servable, self.serving)
            else:
                loaded = self.loader.load(candidate)
            self._serve_with_deltas(loaded)
            logger.info("serving %s again", candidate.describe())
        except (ModelLoadError, _core.LoadError) as e:
            self.unload_serving()
            logger.error("cannot bring back %s (%s): nothing serves until a version loads", candidate.describe(), e)

    # ---- internals

    def _serving_key(self) -> Tuple[int, int]:
        """The serving version's place in the order of versions: deltas move it forward too."""
        savedmodel_version, step = self.serving.candidate.key
        return (savedmodel_version, max(step, self._delta_step))

    def _load_and_install(self, candidate: Candidate, raise_errors: bool) -> bool:
        if not raise_errors and self._backoff.waiting(candidate.identity):  # a forced update ignores it
            return False
        try:
            self._switch_to(candidate, with_deltas=True, is_update=True)
        except ModelLoadError:
            if raise_errors:
                raise
            return False
        self._backoff.clear()  # older failed versions are moot now
        return True

    def _switch_to(self, candidate: Candidate, with_deltas: bool, is_update: bool) -> None:
        """Makes `candidate` serve, under the version policy; with_deltas: its run's deltas go on before
        it serves (one that fails is retried later on the serving version). A failure is counted and
        raised as ModelLoadError, and the serving version stays (or is brought back)."""
        loaded = self._policy.load(self, candidate)
        if is_update:
            self._updates_applied += 1
        if with_deltas:
            self._serve_with_deltas(loaded)
        else:
            self._install(loaded)

    def _serve_with_deltas(self, loaded: LoadedVersion) -> None:
        """Applies the deltas of the version's run, then makes it serve; a delta that fails is retried
        later on the serving version."""
        delta_step, _ = self._apply_deltas(loaded.servable, loaded.record.candidate, -1, respect_backoff=False)
        self._install(loaded, delta_step)

    def _apply_pending_deltas(self, raise_errors: bool) -> bool:
        candidate = self.serving.candidate
        if candidate.checkpoint is None or self.serving_servable is None:
            return False
        step, error = self._apply_deltas(self.serving_servable, candidate, self._delta_step,
                                         respect_backoff=not raise_errors)
        applied = step != self._delta_step
        if applied:
            self._delta_step = step
            self._updates_applied += 1
            self._publish_model_info()
            self.loader.retain(self._history)  # the deltas' downloaded files
        if error is not None and raise_errors:
            raise error
        return applied

    def _apply_deltas(self, servable: _core.Servable, candidate: Candidate, delta_step: int,
                      respect_backoff: bool) -> Tuple[int, Optional[ModelLoadError]]:
        """Applies the deltas of `candidate`'s run newer than max(its step, delta_step) to `servable`, in
        order. Returns the newest step applied (or delta_step) and the error that stopped it, if any: a
        failing delta is counted and backed off, and the ones after it wait for it."""
        if candidate.checkpoint is None:
            return delta_step, None
        for delta in self.loader.pending_deltas(candidate, max(candidate.checkpoint.step, delta_step)):
            identity = (candidate.savedmodel.path, delta.prefix)
            if respect_backoff and self._backoff.waiting(identity):
                break
            try:
                local = self.loader.localize_delta(delta)
                plan = plan_delta(local, [(v.name, v.saved_name) for v in control.graph_variables(servable)])
                store = self.loader.feature_store
                if store is not None:  # the rows of tables in Redis are written there, once among replicas
                    plan, changes = store.split_delta(candidate.savedmodel.path, plan)
                    store.apply_delta(store_version_of(candidate), delta.step, local, changes)
                    store.forget_delta_rows(store_version_of(candidate), servable, local, changes)
                servable.apply_delta(local, plan)
            except (ModelLoadError, _core.LoadError) as e:
                error = ModelLoadError(f"cannot apply delta {delta.prefix}: {e}")
                self.count_failure(identity, str(error))
                return delta_step, error
            self._backoff.succeeded(identity)
            delta_step = delta.step
            logger.info("applied delta %s", delta.prefix)
        return delta_step, None

    def _publish_model_info(self) -> None:
        """The serving version's info for get_serving_model_info(); nothing before a version serves
        (a delta that fails before the first version is installed is counted, and shown once it is)."""
        handle = self.handle
        if handle is not None and self.serving is not None:
            handle.set_model_info(self._model_info_bytes())

    def _model_info_bytes(self) -> bytes:
        record = self.serving
        candidate = record.candidate
        return predict_pb2.ServingModelInfo(
            model_path=candidate.model_path, savedmodel_dir=candidate.savedmodel.path,
            signature_name=self.config.signature_name,
            version_step=candidate.checkpoint.step if candidate.checkpoint else -1,
            load_time_unix_ms=record.load_time_unix_ms, load_duration_ms=record.load_duration_ms,
            updates_applied=self._updates_applied, updates_failed=self._updates_failed,
            delta_step=self._delta_step, savedmodel_version=candidate.savedmodel.version,
            pinned=self._pin is not None).SerializeToString()

    def _install(self, loaded: LoadedVersion, delta_step: int = -1) -> None:
        """Makes `loaded` serve. New requests get it at once; the install returns once the requests still
        on the version it replaced have answered, and that version is released here, off the request path."""
        with self._state_lock:
            handle = self.live_handle()  # closed meanwhile: the load is discarded
            self.serving = loaded.record
            self._serving = (loaded.servable, loaded.record)
            self._delta_step = delta_step
            if loaded.record.candidate not in self._history:
                self._history.append(loaded.record.candidate)
                self._history.sort(key=lambda c: c.key)
            self._trim_history()
            handle.install(loaded.servable, self._model_info_bytes())
        logger.info("serving %s", loaded.record.candidate.describe())
        self.loader.retain(self._history)
        if self.loader.feature_store is not None:
            self.loader.feature_store.delete_old_versions(keep=self.config.rollback_keep + 1)

    def _trim_history(self) -> None:
        """Keeps the serving version and the `rollback_keep` newest others."""
        others = [c for c in self._history if c != self.serving.candidate]
        keep = set(others[-self.config.rollback_keep:]) | {self.serving.candidate}
        self._history = [c for c in self._history if c in keep]
