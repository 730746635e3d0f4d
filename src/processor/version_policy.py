"""How a new version replaces the serving one (config `version_policy`), as TF Serving's aspired-version
policies: one small object each, with one method."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Dict, Type

from . import _core
from .config import VERSION_POLICIES
from .errors import ModelLoadError
from .loading import control
from .loading.loader import Candidate, LoadedVersion, VersionRecord

if TYPE_CHECKING:
    from .lifecycle import VersionLifecycle


class AvailabilityPreserving:
    """Loads the new version beside the serving one, which serves until the swap: two versions in
    memory for a while, and no request ever waits or fails."""

    def load(self, lifecycle: "VersionLifecycle", candidate: Candidate) -> LoadedVersion:
        return lifecycle.load_counting_failures(candidate)


class ResourcePreserving:
    """Never holds two versions in memory. Same graph: restores the new checkpoint into the serving
    session (requests during the restore may see a mix of the two versions). Another graph: unloads
    (requests get 503) and then loads. On failure the previous version is brought back."""

    def load(self, lifecycle: "VersionLifecycle", candidate: Candidate) -> LoadedVersion:
        loader = lifecycle.loader
        previous = lifecycle.serving.candidate
        servable = lifecycle.serving_servable
        started = time.monotonic()
        # A feature-store version is loaded whole: its tables are not in the session to restore into.
        same_graph = servable is not None and candidate.checkpoint is not None and \
            candidate.savedmodel.path == previous.savedmodel.path and loader.feature_store is None
        try:
            if not same_graph:
                lifecycle.unload_serving()
                return loader.load(candidate)
            try:
                control.restore(servable, loader.localize(candidate).checkpoint.prefix, candidate.describe())
            except _core.LoadError as e:
                raise ModelLoadError(f"cannot restore {candidate.describe()} in place: {e}") from None
            return LoadedVersion(servable, VersionRecord(candidate, int(time.time() * 1000),
                                                         int((time.monotonic() - started) * 1000)))
        except ModelLoadError as error:
            lifecycle.count_failure(candidate.identity, str(error))
            lifecycle.bring_back(previous, servable if same_graph else None)
            raise


POLICIES: Dict[str, Type] = {"availability_preserving": AvailabilityPreserving,
                             "resource_preserving": ResourcePreserving}
assert set(POLICIES) == set(VERSION_POLICIES), "config.VERSION_POLICIES and version_policy.POLICIES differ"
