"""The control plane's side of serving embeddings from a feature store.

The data plane rewrites the graph and reads the tables (cpp/feature_store/). Here: the request that
asks for it (protos/control.proto), and for Redis what must happen around a load: the version's tables imported by one
replica (or awaited) before it loads, deltas' changed rows written once among replicas, and versions
beyond the `rollback_keep` newest deleted.
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from typing import Dict, List, Optional, Tuple

import numpy as np

from .. import control_pb2
from ..config import ProcessorConfig
from ..errors import ModelLoadError, StoreError
from .layout_filters import parse_layout_filter
from . import tier_files
from .table_sources import CheckpointTable, EmbeddingVariableTable, MonolithTable

logger = logging.getLogger(__name__)

# Part of every Redis table's identity: tables imported in an older layout are imported again, never
# read as this one (2: every partition holds its import's token).
REDIS_LAYOUT = 2

DeltaPlan = List[Tuple[str, bool, int]]  # (variable, sparse, key dtype), as incremental.plan_delta gives


def store_version(savedmodel_version: int, checkpoint_step: Optional[int]) -> int:
    """The number a version's tables are kept under in the store: its checkpoint's step, or else its
    SavedModel's version (0 for an unversioned SavedModel)."""
    return checkpoint_step if checkpoint_step is not None else max(savedmodel_version, 0)


class FeatureStore:
    def __init__(self, config: ProcessorConfig):
        self.config = config
        self.namespace = config.feature_store_namespace or config.model_name
        self._redis_tables = None
        self._embeddings: Dict[str, Dict[str, control_pb2.Embedding]] = {}  # by SavedModel path, then variable
        self._stored_as: Dict[int, int] = {}  # version -> the number its tables have in Redis (version_id)
        self._tokens: Dict[int, str] = {}  # version -> the import its load serves (redis_tables.py)
        self._delta_marks: Dict[int, tuple] = {}  # version -> its deltas in Redis as last seen (hot-row cache)
        if self.tiered:
            tier_files.clear_stale(config.ev_storage_path)

    @property
    def is_redis(self) -> bool:
        return self.config.feature_store_type == "redis"

    @property
    def tiered(self) -> bool:
        """Local tables in two tiers, DRAM and disk (ev_storage_type 12, DeepRec's DRAM_SSDHASH)."""
        return not self.is_redis and self.config.ev_storage_type == "DRAM_SSDHASH"

    def request(self) -> Optional[control_pb2.FeatureStore]:
        """Which variables a load serves from the store, and how it reaches Redis; None when only the
        EmbeddingVariables a graph holds go to it (which a load finds by itself)."""
        config = self.config
        min_rows = config.embedding_min_rows
        if self.is_redis and not config.embedding_names and not min_rows:
            min_rows = 1  # every variable the signature only gathers from
        names = config.embedding_names + [name for name in config.monolith_tables if name not in config.embedding_names]
        if self.tiered and not names and not min_rows:
            return None  # only the EmbeddingVariables a graph may hold, as DeepRec's ev_storage_type means
        request = control_pb2.FeatureStore(feature_store_type=config.feature_store_type, embedding_names=names,
                                           embedding_min_rows=min_rows,
                                           embedding_default_value=config.embedding_default_value)
        if self.is_redis:
            request.redis_url = config.redis_url
            request.redis_password = config.redis_password or ""
            request.read_thread_num = config.read_thread_num
            request.feature_store_cache_bytes = config.feature_store_cache_bytes
        return request

    def prepare(self, version: int, savedmodel: str, prefix: str,
                embeddings: List[control_pb2.Embedding]) -> control_pb2.TableSources:
        """Where the tables of a load of `version` of `savedmodel` (its store path) come from, given the
        embeddings its plan serves from the store and the local checkpoint `prefix` it restores: for
        local tables, the Monolith dumps' shards, or in two tiers their rows written to disk; for Redis, the version's tables, complete in the store
        first (imported here, or by another replica)."""
        by_name = {e.name: e for e in embeddings}
        self._embeddings[savedmodel] = by_name
        unknown = sorted(set(self.config.monolith_tables) - set(by_name))
        if unknown:
            raise ModelLoadError(f"monolith_tables names {', '.join(unknown)}, not among the embeddings served from "
                                 f"the feature store ({', '.join(by_name)})")
        if self.tiered:  # every table in two tiers: its rows written to the disk tier's files
            sources = self._sources(prefix, by_name)
            tables = tier_files.write_tables(self.config.ev_storage_path, f"{self.namespace}-v{version}", sources)
            tables.tier_dram_bytes = self.config.ev_storage_sizes[0]
            return tables
        if not self.is_redis:  # the data plane reads the shards layout_filters keep
            return control_pb2.TableSources(monolith_tables=[
                control_pb2.MonolithTable(variable=name, shards=self._monolith_table(name, by_name[name].dim).shards)
                for name in self.config.monolith_tables])
        sources = self._sources(prefix, by_name)
        import hashlib  # here: hashing loads OpenSSL, which local stores must never load
        identity = hashlib.sha256(json.dumps({"layout": REDIS_LAYOUT, **{
            name: source.identity() for name, source in sorted(sources.items())}}, sort_keys=True).encode()).hexdigest()[:32]
        tables = self._tables()
        with _redis_errors():
            stored_as = tables.version_id(version, identity)
            token = tables.token(stored_as)
            lost = tables.lost(stored_as, token) if token else None
            if lost:  # imported before, lost since: imported anew
                logger.warning("%s: importing it again", lost)
                tables.forget(stored_as, token)
                stored_as = tables.version_id(version, identity)
            tables.ensure_version(stored_as, sources)
            stored, token = tables.tables_and_token(stored_as)
        self._stored_as[version] = stored_as
        self._tokens[version] = token
        if self.config.feature_store_cache_bytes:
            with _redis_errors():
                self._delta_marks[version] = tables.delta_mark(stored_as)
        missing = [name for name in by_name if name not in stored]
        if missing:
            raise StoreError(f"version {version} in Redis lacks table(s) {', '.join(missing)} (imported from "
                             f"another graph?)")
        # The partitions the version was imported with, whatever this replica's config says.
        partitions = stored[next(iter(by_name))]["partitions"] if by_name else self.config.feature_store_partitions
        return control_pb2.TableSources(
            redis_tables=[control_pb2.RedisTable(variable=name, key_prefix=tables.table_key_prefix(stored_as, name))
                          for name in by_name],
            redis_versions_key=tables.versions_key(), redis_version=stored_as, redis_token=token,
            redis_partitions=partitions)

    def _sources(self, prefix: str, by_name: Dict[str, control_pb2.Embedding]) -> dict:
        """Where each table's rows come from: a Monolith dump, an EmbeddingVariable or a checkpoint variable."""
        return {name: self._monolith_table(name, e.dim) if name in self.config.monolith_tables else
                EmbeddingVariableTable(prefix, e.saved_name) if e.keyed_by_id else
                CheckpointTable(prefix, e.saved_name, e.first_row, e.rows) for name, e in by_name.items()}

    def lost(self, version: int) -> Optional[str]:
        """Why the tables a load of `version` serves are gone or changed in Redis (a server restarted
        empty, a flush, another import), or None while they are intact or cannot be checked (Redis out
        of reach: requests say so themselves)."""
        if not self.is_redis or version not in self._tokens:
            return None
        try:
            with _redis_errors():
                return self._tables().lost(self._stored_as[version], self._tokens[version])
        except StoreError as e:
            logger.debug("cannot check the tables in Redis: %s", e)
            return None

    def _monolith_table(self, variable: str, dim: int) -> MonolithTable:
        directory, _, name = self.config.monolith_tables[variable].rstrip("/").rpartition("/")
        table = MonolithTable(directory, name, [parse_layout_filter(text) for text in self.config.layout_filters])
        if table.dim != dim:
            raise ModelLoadError(f"Monolith table {table.source} has rows of {table.dim} numbers, variable "
                                 f"'{variable}' of {dim}")
        return table

    def split_delta(self, savedmodel: str, plan: DeltaPlan) -> Tuple[DeltaPlan, Dict[str, Tuple[bool, control_pb2.Embedding]]]:
        """(what the session applies, table -> (sparse, its Embedding) for what the control plane writes
        to Redis). A local store's tables take their rows in the data plane, like the session's variables."""
        if not self.is_redis:
            return plan, {}
        stored = self._embeddings.get(savedmodel, {})
        return ([entry for entry in plan if entry[0] not in stored],
                {name: (sparse, stored[name]) for name, sparse, _ in plan if name in stored})

    def apply_delta(self, version: int, step: int, prefix: str, changes: Dict[str, Tuple[bool, control_pb2.Embedding]]) -> None:
        if changes:
            with _redis_errors():
                self._tables().apply_delta(self._stored_as.get(version, version), step, prefix,
                                           {name: sparse for name, (sparse, _) in changes.items()},
                                           {name: (e.saved_name, e.first_row) for name, (_, e) in changes.items()})

    def forget_delta_rows(self, version: int, servable, prefix: str,
                          changes: Dict[str, Tuple[bool, control_pb2.Embedding]]) -> None:
        """After a delta's rows are in Redis (written here or by another replica): the serving version's
        hot-row cache forgets exactly the rows it changes (a whole variable: all of its table's)."""
        if not self.config.feature_store_cache_bytes or not changes:
            return
        from ..loading.deltas import KEYS_SUFFIX
        from .checkpoint_rows import read_tensor
        for name, (sparse, _) in sorted(changes.items()):
            servable.forget_rows(name, read_tensor(prefix, name + KEYS_SUFFIX).astype(np.int64).reshape(-1)
                                 if sparse else None)
        self.deltas_changed(version)  # this delta seen: the next check does not clear the whole cache

    def deltas_changed(self, version: int) -> bool:
        """Whether deltas were written to `version`'s tables in Redis since this replica last looked (by
        another replica, say): then its hot-row cache must forget what it holds. False without a cache,
        or when Redis cannot be asked (its lookups say so themselves)."""
        if not self.config.feature_store_cache_bytes or version not in self._stored_as:
            return False
        try:
            with _redis_errors():
                mark = self._tables().delta_mark(self._stored_as[version])
        except StoreError as e:
            logger.debug("cannot read the deltas of version %d in Redis: %s", version, e)
            return False
        previous, self._delta_marks[version] = self._delta_marks.get(version), mark
        return previous != mark

    def delete_old_versions(self, keep: int) -> List[int]:
        """Deletes the store's versions but the `keep` newest; failures are logged, not raised."""
        if not self.is_redis:
            return []
        try:
            with _redis_errors():
                return self._tables().delete_old_versions(keep)
        except StoreError as e:
            logger.warning("cannot delete old versions from Redis: %s", e)
            return []

    def close(self) -> None:
        if self._redis_tables is not None:
            self._redis_tables.client.close()
            self._redis_tables = None

    def _tables(self):
        if self._redis_tables is None:
            from .redis_tables import RedisTables, connect  # redis-py: only when configured
            self._redis_tables = RedisTables(connect(self.config.redis_url, self.config.redis_password), self.namespace,
                                             self.config.feature_store_partitions, self.config.update_thread_num)
        return self._redis_tables


@contextmanager
def _redis_errors():
    """redis-py's exceptions as StoreError (transient for connection trouble), never with the password."""
    try:
        yield
    except Exception as error:
        import redis
        if isinstance(error, redis.AuthenticationError):
            raise StoreError("Redis refused the password (check redis_password)") from None
        if isinstance(error, (redis.ConnectionError, redis.TimeoutError)):
            raise StoreError(f"Redis is unreachable: {type(error).__name__}: {error}", transient=True) from None
        if isinstance(error, redis.RedisError):
            raise StoreError(f"Redis: {type(error).__name__}: {error}") from None
        raise
