"""Versioned embedding tables in Redis or a Redis Cluster, written by one replica at a time.

Layout (HugeCTR HPS-style hash-tagged partitions): row `id` of table T in model version V lives in the
hash `pe:{<namespace>/<V>/<T>/<id % partitions>}`, field = the id as 8 little-endian bytes, value = the row
as little-endian float32 (the table's dtype) bytes. The braces are a Redis Cluster hash tag: each
partition sits in one slot, and the partitions of a table spread over the cluster's masters.

A version is complete when its number is in the sorted set `pe:{<namespace>}:versions` (written last, after
every row and the version's metadata hash `pe:{<namespace>}:v:<V>`): replicas serve only complete versions,
so they all agree. One replica imports a version while holding `pe:{<namespace>}:lock:<V>` (SET NX PX,
renewed while it writes, released by compare-and-delete); the others wait for the version to
complete, and take over if the lock expires without it (the importer died).

Each import has a token, in the metadata and in the field "#" of every partition (written before the
rows): the data plane reads it with the rows, so a partition that lost its rows (a server restarted
empty) or was imported again is never served as ids the table lacks; lost() checks the same from
here, and forget() drops such a version so that it is imported anew.

This module spells every key: a load gives the data plane each table's key prefix and the versions key
(control.TableSources). The data plane appends "<partition>}" and reads the field "#" itself
(cpp/feature_store/redis_table.h): every Redis test of tests/test_feature_store_serving.py reads through
it what this module wrote, and fails if the two differ.

redis-py (RedisCluster for clusters) routes by slot and follows MOVED/ASK.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import redis
from redis.cluster import ClusterNode, RedisCluster

from ..errors import StoreError
from ..loading.deltas import KEYS_SUFFIX, VALUES_SUFFIX
from .checkpoint_rows import iter_rows, read_tensor
from .table_sources import CheckpointTable

logger = logging.getLogger(__name__)

LOCK_TTL_MS = 30_000
WAIT_POLL_SECONDS = 0.1
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
# KEYS: meta, versions, deltas, ids; ARGV: version, the lost import's token. Only that import is forgotten:
# a replica that re-imported meanwhile keeps its own.
_FORGET = """
if redis.call('hget', KEYS[1], 'token') ~= ARGV[2] then return 0 end
redis.call('zrem', KEYS[2], ARGV[1])
redis.call('del', KEYS[1], KEYS[3])
local ids = redis.call('hgetall', KEYS[4])
for i = 1, #ids, 2 do
  if ids[i + 1] == ARGV[1] then redis.call('hdel', KEYS[4], ids[i]) end
end
return 1
"""
MARKER_FIELD = b"#"  # in every partition: the import's token (one byte: never an id's eight)


def _nodes(redis_url: str) -> List[Tuple[str, int]]:
    nodes = []
    for node in (n.strip() for n in redis_url.split(",")):
        if not node:
            continue
        address = node.split("://", 1)[-1]
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise StoreError(f"redis_url: '{node}' is not host:port")
        nodes.append((host, int(port)))
    if not nodes:
        raise StoreError("redis_url names no node")
    return nodes


def connect(redis_url: str, password: str = "") -> "redis.Redis | RedisCluster":
    """A client for one server, or for a cluster (several nodes listed, or one node of a cluster)."""
    nodes = _nodes(redis_url)
    where = ", ".join(f"{h}:{p}" for h, p in nodes)
    try:
        if len(nodes) == 1:
            single = redis.Redis(host=nodes[0][0], port=nodes[0][1], password=password or None,
                                 socket_timeout=10, socket_connect_timeout=5)
            if not single.info("cluster").get("cluster_enabled"):
                return single
            single.close()
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], password=password or None,
                            socket_timeout=10, socket_connect_timeout=5)
    except redis.AuthenticationError:
        if not password:
            raise StoreError(f"Redis at {where} needs a password (set redis_password)") from None
        raise StoreError(f"Redis at {where} refused the password (check redis_password)") from None
    except redis.ResponseError as e:
        raise StoreError(f"Redis at {where}: {e}") from None
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise StoreError(f"cannot reach Redis at {where}: {type(e).__name__}", transient=True) from None
    except redis.RedisClusterException as e:
        raise StoreError(f"Redis Cluster at {where}: {e}", transient=True) from None


VARIANTS_PER_VERSION = 1000  # distinct sources one version number may have in Redis (see version_id)


class RedisTables:
    def __init__(self, client, namespace: str, partitions: int = 16, update_threads: int = 1, block_rows: int = 8192):
        self.client = client
        self.namespace = namespace  # feature_store_namespace (default: the model's name)
        self.partitions = partitions
        self.update_threads = update_threads
        self.block_rows = block_rows

    # ---- keys

    def table_key_prefix(self, version: int, table: str) -> str:
        """What the data plane's reader puts before "<partition>}" (cpp/feature_store/redis_table.h)."""
        return f"pe:{{{self.namespace}/{version}/{table}/"

    def partition_key(self, version: int, table: str, partition: int) -> str:
        return f"{self.table_key_prefix(version, table)}{partition}}}"

    def _meta_key(self, version: int) -> str:
        return f"pe:{{{self.namespace}}}:v:{version}"

    def versions_key(self) -> str:
        return f"pe:{{{self.namespace}}}:versions"

    def _lock_key(self, version) -> str:
        return f"pe:{{{self.namespace}}}:lock:{version}"

    def _deltas_key(self, version: int) -> str:
        return f"pe:{{{self.namespace}}}:deltas:{version}"

    def delta_mark(self, version: int) -> tuple:
        """What the deltas written to `version` are, in a word: (how many, the newest step). A delta
        written by any replica changes it once its rows are all written."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(self._deltas_key(version))
        pipe.zrevrange(self._deltas_key(version), 0, 0, withscores=True)
        count, newest = pipe.execute()
        return (int(count), newest[0][1] if newest else None)

    def _ids_key(self) -> str:
        return f"pe:{{{self.namespace}}}:ids"

    def _variants_key(self) -> str:
        return f"pe:{{{self.namespace}}}:variants"

    # ---- identities

    def version_id(self, version: int, identity: str) -> int:
        """The number a model version's tables are kept under in Redis, one per (version, where its rows
        come from): replicas with the same sources share it; a newer Monolith dump, another selection
        of shards or rewritten variables under the same version number get another, so that no replica
        ever serves rows that are not its own. Numbers order by version: version * 1000 + n."""
        field = f"{version}:{identity}"
        found = self.client.hget(self._ids_key(), field)
        if found is None:
            n = self.client.hincrby(self._variants_key(), str(version), 1)
            if n >= VARIANTS_PER_VERSION:
                raise StoreError(f"model {self.namespace} version {version} has had {n} different sources in Redis "
                                 f"(at most {VARIANTS_PER_VERSION - 1}): delete its keys, or use a new version")
            self.client.hsetnx(self._ids_key(), field, version * VARIANTS_PER_VERSION + n)
            found = self.client.hget(self._ids_key(), field)
        return int(found)

    # ---- versions

    def complete_versions(self) -> List[int]:
        return [int(v) for v in self.client.zrange(self.versions_key(), 0, -1)]

    def is_complete(self, version: int) -> bool:
        return self.client.zscore(self.versions_key(), str(version)) is not None

    def tables(self, version: int) -> Dict[str, dict]:
        raw = self.client.hget(self._meta_key(version), "tables")
        return json.loads(raw) if raw else {}

    def token(self, version: int) -> str:
        """The token of the import that made `version` complete ("" if none)."""
        raw = self.client.hget(self._meta_key(version), "token")
        return raw.decode() if raw else ""

    def tables_and_token(self, version: int) -> Tuple[Dict[str, dict], str]:
        """tables() and token() in one round trip."""
        tables, token = self.client.hmget(self._meta_key(version), ["tables", "token"])
        return (json.loads(tables) if tables else {}), (token.decode() if token else "")

    def lost(self, version: int, token: str) -> Optional[str]:
        """Why the import `token` of `version` can no longer be served (its marker, metadata or a
        partition's rows are gone, or it was imported again), or None when it is intact."""
        if not self.is_complete(version):
            return f"model {self.namespace} version {version} is no longer complete in Redis"
        if self.token(version) != token:
            return f"model {self.namespace} version {version} was imported again in Redis"
        lost = [key for key, marker in self._markers(version, self._stored_partitions(version))
                if marker != token.encode()]
        if lost:
            return f"{len(lost)} partition(s) of model {self.namespace} version {version} lost their rows in Redis " \
                   f"(a server restarted empty?): {', '.join(lost[:3])}{' ...' if len(lost) > 3 else ''}"
        return None

    def forget(self, version: int, token: str) -> None:
        """Drops the import `token` of `version` (lost() said why): it is no longer complete, its number
        no longer stands for its sources, and its remaining keys are deleted; the next load imports anew."""
        partitions = self._stored_partitions(version)
        if self.client.eval(_FORGET, 4, self._meta_key(version), self.versions_key(), self._deltas_key(version),
                            self._ids_key(), str(version), token):
            self._unlink_partitions(version, partitions)
            logger.warning("forgot model %s version %d in Redis: it lost rows; it will be imported again",
                           self.namespace, version)

    def ensure_version(self, version: int, tables: Mapping[str, object], timeout: float = 3600.0) -> bool:
        """Makes `version` complete in the store: imports it under the lock, or waits while another
        replica does. `tables`: table name -> a source (table_sources.py), or (checkpoint prefix,
        variable name). Returns True when this replica imported it."""
        return self._once(lambda: self.is_complete(version), self._lock_key(version),
                          lambda token: self._import(version, tables, token), f"version {version}", timeout)

    def apply_delta(self, version: int, step: int, prefix: str, changes: Mapping[str, bool],
                    saved_as: Optional[Mapping[str, Tuple[str, int]]] = None, timeout: float = 600.0) -> bool:
        """Writes the rows a delta (at `prefix`, step `step`) changes in tables of `version`, once among
        replicas (marker: the step in `pe:{<namespace>}:deltas:<version>`). `changes`: table -> sparse (rows
        by id) or not (the whole table). `saved_as`: table -> (saved name, first row) for a part of a
        partitioned variable, which a whole delta saves as its slice of the full variable. Only the
        changed rows are written; each row is replaced atomically, a delta as a whole is not (requests
        meanwhile may see some rows new, some old)."""
        saved_as = saved_as or {}
        marker = self._deltas_key(version)

        def write(token: str) -> None:
            meta = self.tables(version)
            for table, sparse in sorted(changes.items()):
                if table not in meta:
                    raise StoreError(f"model {self.namespace} version {version} has no table '{table}' in Redis")
                rows, dim, any_id = meta[table]["rows"], meta[table]["dim"], meta[table].get("keyed_by_any_id", False)
                if meta[table]["partitions"] != self.partitions:
                    raise StoreError(f"table '{table}' of version {version} has {meta[table]['partitions']} partitions "
                                     f"in Redis, feature_store_partitions is {self.partitions}")
                if sparse:
                    ids = read_tensor(prefix, table + KEYS_SUFFIX).astype(np.int64).reshape(-1)
                    values = read_tensor(prefix, table + VALUES_SUFFIX)
                    if values.shape != (len(ids), dim):
                        raise StoreError(f"delta {prefix}: '{table}' rows have shape {list(values.shape)}, "
                                         f"the table [{len(ids)}, {dim}] for {len(ids)} ids")
                    inside = (ids >= 0) & (ids < rows)
                    if not any_id and not inside.all():  # skipped, as DeepRec does (and the data plane)
                        logger.warning("incremental checkpoint %s: table '%s': skipped %d row(s) whose id is outside "
                                       "[0, %d); the other rows apply", prefix, table, int((~inside).sum()), rows)
                        ids, values = ids[inside], values[inside]
                    self._write_rows(version, table, ids, values)
                elif any_id:  # as the data plane does for its local tables of Monolith dumps
                    logger.warning("incremental checkpoint %s saves '%s' whole; its table holds a Monolith dump's "
                                   "ids, so its rows stay as they are", prefix, table)
                else:
                    saved, first_row = saved_as.get(table, (table, 0))
                    part = saved != table  # its rows [first_row, first_row + rows) of the saved variable
                    for first, block in iter_rows(prefix, saved, self.block_rows, first_row=first_row,
                                                  count=rows if part else None):
                        local = first - first_row
                        self._write_rows(version, table, np.arange(local, local + len(block)), block)
            self.client.zadd(marker, {str(step): step})
            logger.info("wrote delta %s (step %d) of model %s version %d to Redis: %s", prefix, step, self.namespace,
                        version, ", ".join(sorted(changes)))

        return self._once(lambda: self.client.zscore(marker, str(step)) is not None,
                          self._lock_key(f"{version}:delta:{step}"), write, f"delta {step} of version {version}",
                          timeout)

    def _once(self, done, lock_key: str, work, what: str, timeout: float) -> bool:
        """Runs work(token) under the lock unless done(); waits while another replica holds the lock,
        and takes over if it expires with the work not done. Returns True when this replica did it."""
        deadline = time.monotonic() + timeout
        while True:
            if done():
                return False
            token = uuid.uuid4().hex
            if self.client.set(lock_key, token, nx=True, px=LOCK_TTL_MS):
                try:
                    work(token)
                finally:
                    self.client.eval(_RELEASE, 1, lock_key, token)
                return True
            logger.info("model %s %s is being written by another replica: waiting", self.namespace, what)
            while self.client.exists(lock_key) and not done():
                if time.monotonic() > deadline:
                    raise StoreError(f"timed out waiting for another replica to write {what}")
                time.sleep(WAIT_POLL_SECONDS)

    def delete_old_versions(self, keep: int) -> List[int]:
        """Deletes complete versions but the `keep` newest; returns the deleted ones. A version leaves
        the set of complete versions first, so no replica starts serving it while its rows go."""
        deleted, versions = [], self.complete_versions()
        for version in versions[:-keep] if keep > 0 else versions:
            partitions = self._stored_partitions(version)
            self.client.zrem(self.versions_key(), str(version))
            self._unlink_partitions(version, partitions)
            self.client.delete(self._meta_key(version), self._deltas_key(version))
            stale = [field for field, value in self.client.hgetall(self._ids_key()).items() if int(value) == version]
            if stale:
                self.client.hdel(self._ids_key(), *stale)
            deleted.append(version)
            logger.info("deleted model %s version %d from Redis", self.namespace, version)
        return deleted

    # ---- reading

    def lookup(self, version: int, table: str, ids: Sequence[int], default: Optional[np.ndarray] = None) -> np.ndarray:
        """Rows for `ids` ([n, dim]); ids the table lacks get `default` (zeros). Each id is read once,
        with one HMGET per partition, pipelined."""
        meta = self.tables(version).get(table)
        if meta is None:
            raise StoreError(f"model {self.namespace} version {version} has no table '{table}' in Redis")
        ids = np.asarray(ids, dtype=np.int64)
        unique, inverse = np.unique(ids, return_inverse=True)
        dtype = np.dtype(meta["dtype"])
        rows = np.zeros((len(unique), meta["dim"]), dtype=dtype)
        if default is not None:
            rows[:] = default
        partitions = unique % meta["partitions"]
        pipe = self.client.pipeline(transaction=False)
        groups = []
        for p in np.unique(partitions):
            positions = np.nonzero(partitions == p)[0]
            pipe.hmget(self.partition_key(version, table, int(p)), [i.tobytes() for i in unique[positions].astype("<i8")])
            groups.append(positions)
        for positions, values in zip(groups, pipe.execute()):
            for position, value in zip(positions, values):
                if value is not None:
                    rows[position] = np.frombuffer(value, dtype=dtype)
        return rows[inverse]

    # ---- importing

    def _write_rows(self, version: int, table: str, ids: np.ndarray, rows: np.ndarray) -> None:
        """Rows by id into their partitions, one pipeline (one HSET per partition)."""
        ids = np.asarray(ids, dtype="<i8")
        rows = np.ascontiguousarray(rows, dtype=rows.dtype.newbyteorder("<"))
        partition_of = ids % self.partitions
        pipe = self.client.pipeline(transaction=False)
        for p in np.unique(partition_of):
            positions = np.nonzero(partition_of == p)[0]
            pipe.hset(self.partition_key(version, table, int(p)),
                      mapping={ids[i].tobytes(): rows[i].tobytes() for i in positions})
        pipe.execute()

    def _partition_keys(self, version: int, partitions: Mapping[str, int]) -> List[str]:
        """Every partition's key, of tables with so many partitions each."""
        return [self.partition_key(version, table, p) for table, count in partitions.items() for p in range(count)]

    def _stored_partitions(self, version: int) -> Dict[str, int]:
        """Table -> partitions, as `version` was imported (its metadata)."""
        return {table: meta["partitions"] for table, meta in self.tables(version).items()}

    def _unlink_partitions(self, version: int, partitions: Mapping[str, int]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key in self._partition_keys(version, partitions):
            pipe.unlink(key)
        pipe.execute()

    def _mark_partitions(self, version: int, partitions: Mapping[str, int], import_token: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key in self._partition_keys(version, partitions):
            pipe.hset(key, MARKER_FIELD, import_token)
        pipe.execute()

    def _markers(self, version: int, partitions: Mapping[str, int]) -> List[Tuple[str, Optional[bytes]]]:
        """(key, its marker or None) of every partition."""
        keys = self._partition_keys(version, partitions)
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, MARKER_FIELD)
        return list(zip(keys, pipe.execute()))

    def _import(self, version: int, tables: Mapping[str, object], token: str) -> None:
        started = time.monotonic()
        metadata = {}
        sources = {table: CheckpointTable(*source) if isinstance(source, tuple) else source  # (prefix, variable)
                   for table, source in tables.items()}
        # What an earlier, lost import left: its deltas' marker (they must be written again) and metadata.
        self.client.delete(self._meta_key(version), self._deltas_key(version))
        import_token = uuid.uuid4().hex
        partitions = {table: self.partitions for table in sources}
        self._mark_partitions(version, partitions, import_token)
        renewed = [time.monotonic()]
        renew_lock = threading.Lock()

        def keep_lock() -> None:
            with renew_lock:
                if time.monotonic() - renewed[0] < LOCK_TTL_MS / 3000:
                    return
                if not self.client.eval(_RENEW, 1, self._lock_key(version), token, LOCK_TTL_MS):
                    raise StoreError(f"lost the import lock of version {version} (expired?): another replica may "
                                     f"be importing it")
                renewed[0] = time.monotonic()

        for table, source in sources.items():
            rows, dim = source.rows, source.dim
            metadata[table] = {"rows": rows, "dim": dim, "partitions": self.partitions,
                               "dtype": source.dtype.str, "source": source.source,
                               "keyed_by_any_id": rows is None}  # a hash table's ids (Monolith), not rows 0..N-1
            written = [0]
            progress = threading.Lock()
            next_report = [0.1]

            def write_block(ids: np.ndarray, block: np.ndarray, table=table, rows=rows) -> None:
                keep_lock()
                self._write_rows(version, table, ids, block)
                with progress:
                    written[0] += len(block)
                    if rows is None:  # a hash table: its size is known at the end
                        if written[0] >= next_report[0] * 1_000_000:
                            logger.info("importing %s version %d table %s: %d rows", self.namespace, version, table,
                                        written[0])
                            next_report[0] += 1
                    elif written[0] >= next_report[0] * rows:
                        logger.info("importing %s version %d table %s: %d of %d rows (%.0f %%)", self.namespace, version,
                                    table, written[0], rows, 100.0 * written[0] / rows)
                        next_report[0] = (int(10 * written[0] / rows) + 1) / 10

            # At most 2 blocks per writer in flight: memory stays bounded whatever the table's size.
            with ThreadPoolExecutor(max_workers=self.update_threads, thread_name_prefix="processor-import") as pool:
                pending = []
                for ids, block in source.blocks(self.block_rows):
                    pending.append(pool.submit(write_block, ids, block.copy()))
                    if len(pending) >= 2 * self.update_threads:
                        pending.pop(0).result()
                for future in pending:
                    future.result()
            if rows is None:
                metadata[table]["rows"] = written[0]
        keep_lock()
        missing = [key for key, marker in self._markers(version, partitions) if marker != import_token.encode()]
        if missing:  # a server restarted empty meanwhile, without the connection failing
            raise StoreError(f"import of model {self.namespace} version {version}: {len(missing)} partition(s) lost "
                             f"their rows meanwhile (a server restarted?), e.g. {missing[0]}", transient=True)
        self.client.hset(self._meta_key(version), mapping={"tables": json.dumps(metadata), "token": import_token})
        self.client.zadd(self.versions_key(), {str(version): version})  # the completion marker, last
        logger.info("imported model %s version %d (%s) in %.1f s", self.namespace, version,
                    ", ".join(f"{t}: {m['rows']} rows" for t, m in metadata.items()), time.monotonic() - started)
