"""Processor: a served model, from Python. The same object backs the C ABI's handle for C hosts."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import _core, predict_pb2, tensors
from .config import parse_config
from .errors import ConfigError, ModelLoadError, RequestError, StoreError
from .incremental import plan_delta
from .session_group import apply_openmp_settings
from .updater import PollingThread
from .version_loader import (Candidate, LoadedVersion, VersionLoader, VersionRecord, check_checkpoint_fits,
                             store_version_of)

logger = logging.getLogger(__name__)

OK = 200
MAX_RETRY_BACKOFF_SECONDS = 600.0
STORE_CHECK_SECONDS = 1.0  # how often the serving version's tables in Redis are checked for lost rows


@dataclass(frozen=True)
class ModelInfo:
    """ServingModelInfo as a dataclass."""
    model_path: str
    savedmodel_dir: str
    signature_name: str
    version_step: int
    load_time_unix_ms: int
    load_duration_ms: int
    updates_applied: int
    updates_failed: int
    delta_step: int
    savedmodel_version: int
    pinned: bool

    @classmethod
    def from_bytes(cls, data: bytes) -> "ModelInfo":
        message = predict_pb2.ServingModelInfo.FromString(data)
        return cls(**{name: getattr(message, name) for name in cls.__dataclass_fields__})


@dataclass
class _Failure:
    count: int
    retry_at: float  # time.monotonic()


class Processor:
    """Loads the model the config describes, serves it, and keeps it up to date.

    `config` is a dict, a JSON string or the path of a JSON file. Raises ConfigError or ModelLoadError.
    With a poll interval > 0 a background thread serves each newer complete version as it appears.
    """

    def __init__(self, config: Union[Mapping[str, Any], str, bytes], model_entry: str = ""):
        self.config = parse_config(config)
        self.model_entry = model_entry
        openmp = apply_openmp_settings(self.config)
        if openmp:
            logger.info("exported %s (the TF wheel itself uses no OpenMP)", openmp)
        self._loader = VersionLoader(self.config)
        try:
            self._start()
        except BaseException:
            self._loader.close()
            raise

    def _start(self) -> None:
        self._update_lock = threading.Lock()  # one load at a time: updates, rollbacks
        self._state_lock = threading.Lock()   # installing vs closing
        self._updates_applied = 0
        self._updates_failed = 0
        self._failures: Dict[Tuple[str, str], _Failure] = {}
        self._history: List[Candidate] = []   # loaded versions by key, the serving one included
        self._pin: Optional[Tuple[int, int]] = None  # serve nothing newer than this until a newer one appears
        self._signature: Optional[Tuple[dict, Dict[str, int]]] = None
        self._serving: Optional[VersionRecord] = None
        self._serving_servable: Optional[_core.Servable] = None  # to apply deltas to
        self._delta_step = -1  # newest delta applied to the serving version
        self._model: Optional[_core.Model] = None
        self._poller: Optional[PollingThread] = None
        self._store_watch: Optional[PollingThread] = None  # Redis: reloads when the tables lost rows

        loaded = self._loader.load(self._first_version())
        self._model = _core.Model(self.config.model_name)
        self._model.set_limits(self.config.max_request_bytes, self.config.max_tensor_elements)
        if self.config.timeline_trace_count > 0:
            self._start_timeline()
        if self.config.request_log is not None:
            self._start_request_log()
        self._serve_with_deltas(loaded)
        if self.config.effective_poll_interval > 0:
            self._poller = PollingThread(self.config.effective_poll_interval, self._poll)
            self._poller.start()
        if self._loader.feature_store is not None and self._loader.feature_store.is_redis:
            self._store_watch = PollingThread(STORE_CHECK_SECONDS, self._check_store, name="processor-store-watch")
            self._store_watch.start()

    def _first_version(self) -> Candidate:
        """The version to serve first: the newest complete one, waiting for one to appear up to
        init_timeout_minutes (-1: as long as it takes, as DeepRec does; 0: not at all), and saying what
        it waits for once a minute."""
        minutes = self.config.init_timeout_minutes
        deadline = None if minutes < 0 else time.monotonic() + minutes * 60
        interval = min(self.config.effective_poll_interval or 1.0, 5.0)
        next_report = time.monotonic()
        while True:
            candidate = self._loader.discover()
            if candidate is not None:
                return candidate
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                waited = f" (waited {minutes:g} min, init_timeout_minutes)" if minutes > 0 else ""
                raise ModelLoadError(self._loader.explain_missing() + waited)
            if now >= next_report:
                limit = "as long as it takes" if deadline is None else f"up to {minutes:g} min"
                logger.info("waiting for a version to serve (%s, init_timeout_minutes): %s", limit,
                            self._loader.explain_missing())
                next_report = now + 60
            time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - now)))

    # ---- serving

    @property
    def handle(self) -> int:
        """The model handle as the C ABI's `void*` (an integer address)."""
        return self._live_model().address

    def process(self, request: Union[bytes, bytearray, memoryview]) -> Tuple[int, bytes]:
        """The C ABI's process(): a serialized PredictRequest in, (code, bytes) out. Releases the GIL."""
        model = self._model
        if model is None:
            return 503, b"the processor is closed"
        return model.process(request)

    def signature(self) -> dict:
        """The served signature: {"signature_name", "method_name", "inputs": [...], "outputs": [...]}."""
        return self._signature_and_dtypes()[0]

    def _signature_and_dtypes(self) -> Tuple[dict, Dict[str, int]]:
        """The signature, and the ArrayDataType of each input by alias and tensor name. Cached as one
        tuple so that a concurrent version swap never pairs one version's signature with another's."""
        cached = self._signature
        if cached is None:
            # Asked of the serving version directly: the lookup is not a request of the host's, and
            # must not count in request_count (an empty request through process() does).
            servable = self._serving_servable
            code, body = servable.process(b"") if servable is not None else self.process(b"")
            if code != OK:
                raise RequestError(code, body.decode("utf-8", "replace"))
            signature = json.loads(body)
            dtypes = {}
            for spec in signature["inputs"]:
                dtypes[spec["alias"]] = dtypes[spec["name"]] = predict_pb2.ArrayDataType.Value(spec["dtype"])
            cached = self._signature = (signature, dtypes)
        return cached

    def predict(self, inputs: Mapping[str, Any], output_filter: Optional[Iterable[str]] = None,
                signature_name: str = "") -> Dict[str, np.ndarray]:
        """numpy in, numpy out. Values are converted to the signature's dtypes where that loses nothing.
        Raises RequestError with the ABI's code and message."""
        dtypes = self._signature_and_dtypes()[1]
        arrays = {}
        for name, value in inputs.items():
            try:
                arrays[name] = tensors.to_numpy_input(name, value, dtypes.get(name))
            except (TypeError, ValueError) as e:
                raise RequestError(400, str(e)) from None
        try:  # numpy to request bytes and response bytes to numpy in C++; the run without the GIL
            code, result = self._live_model().predict(arrays, list(output_filter or []), signature_name)
        except (TypeError, ValueError) as e:  # inputs numpy cannot take, or over the ABI's 2 GiB
            raise RequestError(400, str(e)) from None
        if code != OK:
            raise RequestError(code, result.decode("utf-8", "replace"))
        return result

    def serving_model_info(self) -> Tuple[int, bytes]:
        """The C ABI's get_serving_model_info(): (code, serialized ServingModelInfo or message)."""
        model = self._model
        if model is None:
            return 503, b"the processor is closed"
        return model.model_info()

    def metrics(self) -> str:
        """Prometheus text exposition: request counts and latency, serving version, loads (C get_metrics)."""
        model = self._model
        if model is None:
            raise RequestError(503, "the processor is closed")
        return model.metrics()[1].decode("utf-8")

    def model_info(self) -> ModelInfo:
        code, body = self.serving_model_info()
        if code != OK:
            raise RequestError(code, body.decode("utf-8", "replace"))
        return ModelInfo.from_bytes(body)

    # ---- versions

    def update(self) -> bool:
        """Serves the newest complete version if it is newer than the serving one (and not held back by
        a rollback pin): loads and warms it up beside the serving version, then swaps atomically;
        requests in flight finish on the version they started on. Returns True when it swapped. A
        version that fails raises ModelLoadError, and the serving version stays."""
        return self._update(raise_errors=True)

    def versions(self) -> List[int]:
        """Checkpoint steps (or SavedModel versions without a checkpoint dir) rollback() can return to,
        oldest first; the serving one included."""
        with self._update_lock:
            return [self._version_number(c) for c in self._history]

    def rollback(self, version: Optional[int] = None) -> None:
        """Serves an earlier version again: `version` is a kept checkpoint step (see versions()), or
        None / -1 for the one before the serving version. Serving stays pinned to it until a version
        newer than any seen so far appears, or until unpin(). Raises RequestError(400) for a version
        that is not kept, ModelLoadError when it no longer loads (the serving version stays)."""
        with self._update_lock:
            self._live_model()
            current = self._serving.candidate
            if version is None or version == -1:
                earlier = [c for c in self._history if c.key < current.key]
                if not earlier:
                    raise RequestError(400, "there is no earlier version to roll back to")
                target = earlier[-1]
            else:
                matches = [c for c in self._history if self._version_number(c) == version]
                if not matches:
                    kept = ", ".join(str(self._version_number(c)) for c in self._history)
                    raise RequestError(400, f"version {version} is not among the kept versions ({kept})")
                target = matches[-1]
            try:
                newest = self._loader.discover()
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
        """Lifts a rollback pin and serves the newest version again; returns True when it swapped."""
        with self._update_lock:
            self._pin = None
        return self._update(raise_errors=True)

    # ---- lifecycle

    def close(self) -> None:
        """Stops polling, stops serving (process() answers 503 from now on) and releases the model, once the
        requests still on it have answered. Does not wait for a load in progress: its result is discarded.
        Idempotent."""
        for thread in (self._poller, self._store_watch):
            if thread is not None:
                thread.stop()
        with self._state_lock:
            model, self._model = self._model, None
            self._serving_servable = None
        if model is not None:
            model.unload()
            if self.config.request_log is not None:
                model.set_request_log("", 0, 1, 1, 1)  # writes what is queued and closes the file
            self._loader.close()
            logger.info("processor closed")

    def __enter__(self) -> "Processor":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---- internals

    def _start_timeline(self) -> None:
        path = self.config.timeline_path
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise ConfigError("timeline_path", f"cannot create {path!r}: {e.strerror}") from None
        self._model.set_timeline(self.config.timeline_start_step, max(self.config.timeline_interval_step, 1),
                                 self.config.timeline_trace_count, path)
        logger.info("tracing %d request(s) from step %d every %d into %s", self.config.timeline_trace_count,
                    self.config.timeline_start_step, max(self.config.timeline_interval_step, 1), path)

    def _start_request_log(self) -> None:
        log = self.config.request_log
        directory = os.path.dirname(os.path.abspath(log.path))
        try:
            os.makedirs(directory, exist_ok=True)
            self._model.set_request_log(log.path, log.sample_rate, log.max_records, log.max_bytes, log.backups)
        except (OSError, _core.LoadError) as e:
            raise ConfigError("request_log.path", str(e)) from None
        logger.info("logging %g of the requests into %s", log.sample_rate, log.path)

    def _live_model(self) -> _core.Model:
        model = self._model
        if model is None:
            raise RequestError(503, "the processor is closed")
        return model

    def _version_number(self, candidate: Candidate) -> int:
        return candidate.checkpoint.step if candidate.checkpoint else candidate.savedmodel.version

    def _poll(self) -> None:
        try:
            self._update(raise_errors=False)
        except RequestError as e:
            if e.code != 503:  # 503: closed meanwhile; nothing to do
                raise

    def _check_store(self) -> None:
        """Reloads the serving version (its tables imported again, its deltas written again) when its
        tables in Redis lost rows or were imported again; requests meanwhile answer 503, never rows of
        another import or default rows (cpp/feature_store/redis_table.h)."""
        serving = self._serving
        if serving is None:
            return
        reason = self._loader.feature_store.lost(store_version_of(serving.candidate))
        if reason is None:
            return
        with self._update_lock:
            if self._serving is not serving or self._model is None:
                return  # another version serves, or closed, meanwhile
            if self._backed_off(self._identity(serving.candidate), forced=False):
                return  # the last reload failed: retried as failed loads are
            logger.warning("%s: loading %s again", reason, serving.candidate.describe())
            try:
                self._switch_to(serving.candidate, with_deltas=True, is_update=False)
            except ModelLoadError:
                pass  # counted, logged and backed off by _switch_to
            except RequestError as e:
                if e.code != 503:  # 503: closed meanwhile
                    raise

    def _update(self, raise_errors: bool) -> bool:
        with self._update_lock:
            self._live_model()
            try:
                candidate = self._loader.discover()
            except StoreError as error:
                if raise_errors:
                    raise
                logger.warning("cannot look for new versions: %s; still serving %s", error,
                               self._serving.candidate.describe() if self._serving else "nothing")
                return False
            nothing_serves = self._serving_servable is None  # after a failed resource-preserving update
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

    def _serving_key(self) -> Tuple[int, int]:
        """The serving version's place in the order of versions: deltas move it forward too."""
        savedmodel_version, step = self._serving.candidate.key
        return (savedmodel_version, max(step, self._delta_step))

    def _backed_off(self, identity: Tuple[str, str], forced: bool) -> bool:
        """Whether a failed version's retry time has not come yet (a forced update ignores it)."""
        failure = self._failures.get(identity)
        return bool(failure and not forced and time.monotonic() < failure.retry_at)

    def _load_and_install(self, candidate: Candidate, raise_errors: bool) -> bool:
        if self._backed_off(self._identity(candidate), forced=raise_errors):
            return False
        try:
            self._switch_to(candidate, with_deltas=True, is_update=True)
        except ModelLoadError:
            if raise_errors:
                raise
            return False
        self._failures.clear()  # older failed versions are moot now
        return True

    def _switch_to(self, candidate: Candidate, with_deltas: bool, is_update: bool) -> None:
        """Makes `candidate` serve, under the version policy; with_deltas: its run's deltas go on before
        it serves (one that fails is retried later on the serving version). A failure is counted and
        raised as ModelLoadError, and the serving version stays (or is brought back)."""
        if self.config.version_policy == "resource_preserving":
            loaded = self._load_preserving_resources(candidate)
        else:
            loaded = self._load_counting_failures(candidate)
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

    def _load_preserving_resources(self, candidate: Candidate) -> LoadedVersion:
        """Never holds two versions in memory. Same graph: restores the new checkpoint into the serving
        session (requests during the restore may see a mix of the two versions). Another graph: unloads
        (requests get 503) and then loads. On failure the previous version is brought back."""
        previous = self._serving.candidate
        servable = self._serving_servable
        started = time.monotonic()
        # A feature-store version is loaded whole: its tables are not in the session to restore into.
        same_graph = servable is not None and candidate.checkpoint is not None and \
            candidate.savedmodel.path == previous.savedmodel.path and self._loader.feature_store is None
        try:
            if not same_graph:
                self._unload_serving()
                return self._loader.load(candidate)
            prefix = self._loader.localize(candidate).checkpoint.prefix
            check_checkpoint_fits(servable, prefix, candidate.describe())
            try:
                servable.restore(prefix)
            except _core.LoadError as e:
                raise ModelLoadError(f"cannot restore {candidate.describe()} in place: {e}") from None
            return LoadedVersion(servable, VersionRecord(candidate, int(time.time() * 1000),
                                                         int((time.monotonic() - started) * 1000)))
        except ModelLoadError as error:
            self._count_failure(self._identity(candidate), str(error))
            self._bring_back(previous, servable if same_graph else None)
            raise

    def _unload_serving(self) -> None:
        with self._state_lock:
            self._live_model().unload()
            self._serving_servable = None  # the last reference (unload() waited for the requests on it)

    def _bring_back(self, candidate: Candidate, servable: Optional[_core.Servable]) -> None:
        """Serves `candidate` again after a failed resource-preserving update: restored into `servable`
        when given, else loaded anew. If even that fails, nothing serves (503) until a poll loads a version."""
        try:
            if servable is not None:
                servable.restore(self._loader.localize(candidate).checkpoint.prefix)
                loaded = LoadedVersion(servable, self._serving)
            else:
                loaded = self._loader.load(candidate)
            self._serve_with_deltas(loaded)
            logger.info("serving %s again", candidate.describe())
        except (ModelLoadError, _core.LoadError) as e:
            self._unload_serving()
            logger.error("cannot bring back %s (%s): nothing serves until a version loads", candidate.describe(), e)

    def _apply_pending_deltas(self, raise_errors: bool) -> bool:
        candidate = self._serving.candidate
        if candidate.checkpoint is None or self._serving_servable is None:
            return False
        step, error = self._apply_deltas(self._serving_servable, candidate, self._delta_step,
                                         respect_backoff=not raise_errors)
        applied = step != self._delta_step
        if applied:
            self._delta_step = step
            self._updates_applied += 1
            self._publish_model_info()
            self._loader.retain(self._history)  # the deltas' downloaded files
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
        for delta in self._loader.pending_deltas(candidate, max(candidate.checkpoint.step, delta_step)):
            identity = (candidate.savedmodel.path, delta.prefix)
            if respect_backoff and self._backed_off(identity, forced=False):
                break
            try:
                local = self._loader.localize_delta(delta)
                plan = plan_delta(local, [(name, saved_name) for name, _, _, saved_name in servable.variables()])
                store = self._loader.feature_store
                if store is not None:  # the rows of tables in Redis are written there, once among replicas
                    plan, changes = store.split_delta(candidate.savedmodel.path, plan)
                    store.apply_delta(store_version_of(candidate), delta.step, local, changes)
                servable.apply_delta(local, plan)
            except (ModelLoadError, _core.LoadError) as e:
                error = ModelLoadError(f"cannot apply delta {delta.prefix}: {e}")
                self._count_failure(identity, str(error))
                return delta_step, error
            self._failures.pop(identity, None)
            delta_step = delta.step
            logger.info("applied delta %s", delta.prefix)
        return delta_step, None

    @staticmethod
    def _identity(candidate: Candidate) -> Tuple[str, str]:
        return (candidate.savedmodel.path, candidate.model_path)

    def _load_counting_failures(self, candidate: Candidate) -> LoadedVersion:
        """Loads; a failure is counted, logged and backed off (per version), and re-raised."""
        identity = self._identity(candidate)
        try:
            loaded = self._loader.load(candidate)
        except ModelLoadError as error:
            self._count_failure(identity, str(error))
            raise
        self._failures.pop(identity, None)
        return loaded

    def _count_failure(self, identity: Tuple[str, str], message: str) -> None:
        previous = self._failures.get(identity)
        count = previous.count + 1 if previous else 1
        delay = min(max(self.config.effective_poll_interval, 1.0) * 2 ** (count - 1), MAX_RETRY_BACKOFF_SECONDS)
        self._failures[identity] = _Failure(count, time.monotonic() + delay)
        self._updates_failed += 1
        serving = self._serving.candidate.describe() if self._serving else "the version being loaded without it"
        logger.warning("%s; still serving %s; retrying in %.0f s", message, serving, delay)
        self._publish_model_info()

    def _publish_model_info(self) -> None:
        """The serving version's info for get_serving_model_info(); nothing before a version serves
        (a delta that fails before the first version is installed is counted, and shown once it is)."""
        model = self._model
        if model is not None and self._serving is not None:
            model.set_model_info(self._model_info_bytes())

    def _model_info_bytes(self) -> bytes:
        record = self._serving
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
            model = self._live_model()  # closed meanwhile: the load is discarded
            self._serving = loaded.record
            self._serving_servable = loaded.servable
            self._delta_step = delta_step
            if loaded.record.candidate not in self._history:
                self._history.append(loaded.record.candidate)
                self._history.sort(key=lambda c: c.key)
            self._trim_history()
            model.install(loaded.servable, self._model_info_bytes())
            self._signature = None
        logger.info("serving %s", loaded.record.candidate.describe())
        self._loader.retain(self._history)
        if self._loader.feature_store is not None:
            self._loader.feature_store.delete_old_versions(keep=self.config.rollback_keep + 1)

    def _trim_history(self) -> None:
        """Keeps the serving version and the `rollback_keep` newest others."""
        others = [c for c in self._history if c != self._serving.candidate]
        keep = set(others[-self.config.rollback_keep:]) | {self._serving.candidate}
        self._history = [c for c in self._history if c in keep]
