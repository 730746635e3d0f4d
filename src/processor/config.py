"""The processor's JSON configuration, parsed into a typed, validated object.

Every field of DeepRec's processor configuration is accepted, read as DeepRec reads it
(serving/processor/serving/model_config.cc, with jsoncpp): `null` is absent, booleans may be numbers,
integers may be integral reals, `omp_num_threads`/`kmp_blocktime` may be strings, `ev_storage_type`
is DeepRec's number, `embedding_names` may be "a;b". DeepRec's aliases (`feature_store_type` "memory"
and "cluster_redis") mean what they mean there. Keys DeepRec knows and this build cannot honour are
logged once with the reason. Wrong types, unknown enum values and missing required fields raise
ConfigError naming the field; unknown keys are logged and ignored.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from .errors import ConfigError
from .stores.registry import STORE_TYPES as MODEL_STORE_TYPES  # the registry's: local, and each remote store

logger = logging.getLogger(__name__)

SELECT_SESSION_POLICIES = ("MOD", "RR")
FEATURE_STORE_TYPES = ("local", "redis")
FEATURE_STORE_ALIASES = {"memory": "local", "cluster_redis": "redis"}  # DeepRec's names (demo.cc, model_config.cc)
SERIALIZE_PROTOCOLS = ("protobuf",)
VERSION_POLICIES = ("availability_preserving", "resource_preserving")
REMOTE_POLL_INTERVAL_SECONDS = 60.0
LOCAL_POLL_INTERVAL_SECONDS = 5.0
OSS_ENVIRONMENT = {"oss_endpoint": "OSS_ENDPOINT", "oss_access_id": "OSS_ACCESS_KEY_ID",
                   "oss_access_key": "OSS_ACCESS_KEY_SECRET"}  # oss2's variables, used when a field is empty
# DeepRec's tensorflow/core/framework/embedding/config.proto StorageType, by number.
EV_STORAGE_TYPES = {0: "DEFAULT", 1: "DRAM", 2: "PMEM_MEMKIND", 3: "PMEM_LIBPMEM", 4: "SSDHASH", 5: "LEVELDB",
                    6: "HBM", 11: "DRAM_PMEM", 12: "DRAM_SSDHASH", 13: "HBM_DRAM", 14: "DRAM_LEVELDB",
                    101: "DRAM_PMEM_SSDHASH", 102: "HBM_DRAM_SSDHASH"}
PROCESSOR_EV_STORAGE_TYPES = (0, 1, 12)  # what DeepRec's processor serves (model_config.cc refuses the rest)
EV_STORAGE_TIERS = 4                     # DeepRec pads ev_storage_size to four tiers of 1 GiB
# Keys of DeepRec's config this build reads and cannot honour, with why; logged once each.
NOT_HONOURED = {
    "cpusets": "binding each session group pool to CPUs needs DeepRec's own thread pools; TensorFlow's C API "
               "cannot pin them, so the OS schedules the serving threads",
    "gpu_ids_list": "this build runs on tensorflow-cpu: there is no GPU to place sessions on",
    "use_multi_stream": "multi-stream is a GPU feature; this build runs on tensorflow-cpu",
    "lock_timeout": "the Redis import lock is renewed while its holder writes and expires 30 s after the holder "
                    "stops (docs/feature_store.md), so no timeout is needed",
}


# ---- validation helpers: each names the field and says what was expected and what came


def _describe(value: Any) -> str:
    """'int 5', 'str "5"', 'boolean true', 'null', 'list': what a wrong value was, for error messages."""
    if value is None:
        return "null"
    kind = "boolean" if isinstance(value, bool) else type(value).__name__
    return f"{kind} {json.dumps(value)}" if isinstance(value, (str, int, float)) else kind


def _string(name: str, value: Any, choices: Optional[tuple] = None) -> str:
    if not isinstance(value, str):
        raise ConfigError(name, f"must be a string, got {_describe(value)}")
    if choices is not None and value not in choices:
        raise ConfigError(name, f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def _integer(name: str, value: Any, minimum: int = 0, maximum: int = 2**31 - 1) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # jsoncpp's asInt reads 4.0 as 4
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"must be an integer, got {_describe(value)}")
    if value < minimum:
        raise ConfigError(name, f"must be >= {minimum}, got {value}")
    if value > maximum:
        raise ConfigError(name, f"must be < 2^{maximum.bit_length()}, got {value}")
    return value


def _integer_or_text(name: str, value: Any, minimum: int = 0) -> int:
    """An integer, or a string holding one: DeepRec reads these fields with asString()."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError(name, f"must be an integer (or a string holding one), got {_describe(value)}") from None
    return _integer(name, value, minimum)


def _secret_string(name: str, value: Any) -> str:
    """_string for secrets: the error names the type only, since a secret must not reach logs or tracebacks."""
    if not isinstance(value, str):
        raise ConfigError(name, f"must be a string, got {type(value).__name__} (a secret's value is not shown)")
    return value


MAX_NUMBER = 1e7  # a bound for durations (115 days in seconds) and counts given as numbers


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"must be a number, got {_describe(value)}")
    if value < 0 or value != value:
        raise ConfigError(name, f"must be >= 0, got {value}")
    if value > MAX_NUMBER:
        raise ConfigError(name, f"must be at most {MAX_NUMBER:.0e}, got {value}")
    return value


def _wait_minutes(name: str, value: Any) -> float:
    """-1 (wait forever, DeepRec's default), or a number of minutes >= 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == -1:
        return -1
    return _number(name, value)


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"must be a number, got {_describe(value)}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(name, f"must be a finite number, got {value}")
    return float(value)


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0  # jsoncpp's asBool: a number is true unless 0
    if not isinstance(value, bool):
        raise ConfigError(name, f"must be true or false, got {_describe(value)}")
    return value


def _sizes(name: str, value: Any) -> List[int]:
    """Bytes per storage tier (DeepRec reads each with asInt64)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [_integer(name, value, maximum=2**63 - 1)]
    if not isinstance(value, list):
        raise ConfigError(name, f"must be an integer or a list of integers, got {_describe(value)}")
    return [_integer(f"{name}[{i}]", v, maximum=2**63 - 1) for i, v in enumerate(value)]


def _ev_storage_type(name: str, value: Any) -> str:
    """DeepRec's StorageType number (what its processor reads, asInt) or name; returns the name."""
    if isinstance(value, str) and value in EV_STORAGE_TYPES.values():
        return value
    number = _integer(name, value) if not isinstance(value, str) else None
    if number not in EV_STORAGE_TYPES:
        raise ConfigError(name, f"must be one of DeepRec's storage types "
                          f"({', '.join(f'{n} {t}' for n, t in EV_STORAGE_TYPES.items())}), got {_describe(value)}")
    if number not in PROCESSOR_EV_STORAGE_TYPES:
        raise ConfigError(name, f"is {number} ({EV_STORAGE_TYPES[number]}); DeepRec's processor serves only "
                          + ", ".join(f"{n} ({EV_STORAGE_TYPES[n]})" for n in PROCESSOR_EV_STORAGE_TYPES))
    return EV_STORAGE_TYPES[number]


def _feature_store_type(name: str, value: Any) -> str:
    text = _string(name, value, FEATURE_STORE_TYPES + tuple(FEATURE_STORE_ALIASES))
    return FEATURE_STORE_ALIASES.get(text, text)


def _names(name: str, value: Any) -> List[str]:
    """A list, or one string of names separated by ',' or ';' (DeepRec's shard_embedding writes "a;b")."""
    if isinstance(value, str):
        value = [v.strip() for v in value.replace(";", ",").split(",") if v.strip()]
    if not isinstance(value, list):
        raise ConfigError(name, f"must be a list of variable names (or one string of names separated by ',' or "
                          f"';'), got {_describe(value)}")
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v or "," in v or ";" in v:
            raise ConfigError(f"{name}[{i}]", f"must be a variable name, got {_describe(v)}")
    return list(value)


def _tags(name: str, value: Any) -> List[str]:
    """A SavedModel's tag set: a list, or one string of tags separated by ',' (TF Serving's flag)."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(name, f"must be a non-empty list of tags (or one string of tags separated by ','), "
                                f"got {_describe(value)}")
    return list(value)


def _table_paths(name: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(name, f"must map variable names to Monolith table paths (<dir>/<table>), got {_describe(value)}")
    for variable, path in value.items():
        if not isinstance(path, str) or "/" not in path.rstrip("/") or "\n" in path:
            raise ConfigError(f"{name}.{variable}", f"must be <directory>/<table name>, got {_describe(path)}")
    return dict(value)


def _layout_filters(name: str, value: Any) -> List[str]:
    from .feature_store.layout_filters import parse_layout_filter
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(name, f"must be a list of 'PATTERN; CONDITION' strings, got {_describe(value)}")
    for i, text in enumerate(value):
        parse_layout_filter(text, f"{name}[{i}]")  # raises ConfigError naming what is wrong
    return list(value)


def _option(default: Any, parse: Callable[[str, Any], Any]) -> Any:
    """A config field with its validator."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"parse": parse})
    return field(default=default, metadata={"parse": parse})


def _secret() -> Any:
    """A secret string field: repr=False, since configs end up in logs and tracebacks."""
    return field(default="", metadata={"parse": _secret_string}, repr=False)


def _optional(parse: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda name, value: None if value is None else parse(name, value)


def _choice(choices: tuple) -> Callable[[str, Any], str]:
    return lambda name, value: _string(name, value, choices)


def _at_least(minimum: int) -> Callable[[str, Any], int]:
    return lambda name, value: _integer(name, value, minimum)


@dataclass(frozen=True)
class RequestLogConfig:
    """`request_log`: a sample of the requests answered 200, as a TFRecord warmup file."""
    path: str
    sample_rate: float = 0.01      # fraction of requests logged
    max_records: int = 10000       # per file, then it rotates to path.1
    max_bytes: int = 64 << 20      # per file, likewise
    backups: int = 1               # rotated files kept: path.1 .. path.<backups>


def _fraction(name: str, value: Any) -> float:
    number = _number(name, value)
    if number > 1:
        raise ConfigError(name, f"must be between 0 and 1, got {number}")
    return float(number)


_REQUEST_LOG_FIELDS = {"path": _string, "sample_rate": _fraction, "max_records": _at_least(1),
                       "max_bytes": _at_least(1), "backups": _at_least(1)}


def _request_log(name: str, value: Any) -> RequestLogConfig:
    if not isinstance(value, Mapping):
        raise ConfigError(name, f"must be an object like {{\"path\": ..., \"sample_rate\": 0.01}}, got {_describe(value)}")
    for key in value:
        if key not in _REQUEST_LOG_FIELDS:
            raise ConfigError(f"{name}.{key}", f"is not a request_log field ({', '.join(_REQUEST_LOG_FIELDS)})")
    if not isinstance(value.get("path"), str) or not value["path"].strip():
        raise ConfigError(f"{name}.path", "is required: the file to log requests into")
    return RequestLogConfig(**{key: _REQUEST_LOG_FIELDS[key](f"{name}.{key}", v) for key, v in value.items()})


@dataclass(frozen=True)
class BatchingParameters:
    """`batching_parameters`: TF Serving's BatchingParameters (session_bundle_config.proto), its field
    names and defaults; what each does here is in docs/batching.md."""
    max_batch_size: int = 1000        # rows in one merged run
    batch_timeout_micros: int = 0     # > 0: a batch waits up to this long to fill (0: no request waits)
    max_enqueued_batches: int = 10    # the queue holds this many batches' rows; beyond, 503 at once
    num_batch_threads: int = 0        # runs at once; 0: one per two cores
    allowed_batch_sizes: Tuple[int, ...] = ()  # increasing, the last == max_batch_size; runs padded up to one


def _wrapped_integer(minimum: int) -> Callable[[str, Any], int]:
    """An integer, or TF Serving's wrapper form {"value": n} (google.protobuf.Int64Value)."""
    def parse(name: str, value: Any) -> int:
        if isinstance(value, Mapping) and set(value) == {"value"}:
            value = value["value"]
        return _integer_or_text(name, value, minimum)
    return parse


def _allowed_batch_sizes(name: str, value: Any) -> Tuple[int, ...]:
    if not isinstance(value, list):
        raise ConfigError(name, f"must be a list of integers, got {_describe(value)}")
    sizes = tuple(_integer(f"{name}[{i}]", v, 1) for i, v in enumerate(value))
    if any(a >= b for a, b in zip(sizes, sizes[1:])):
        raise ConfigError(name, f"must be increasing, got {list(sizes)}")
    return sizes


_BATCHING_FIELDS = {"max_batch_size": _wrapped_integer(1), "batch_timeout_micros": _wrapped_integer(0),
                    "max_enqueued_batches": _wrapped_integer(1), "num_batch_threads": _wrapped_integer(0),
                    "allowed_batch_sizes": _allowed_batch_sizes}
# TF Serving's fields that change nothing here (thread pools are the callers' threads; inputs of other
# lengths run in batches of their own rather than padded).
_BATCHING_IGNORED = ("thread_pool_name", "pad_variable_length_inputs")


def _batching_parameters(name: str, value: Any) -> BatchingParameters:
    if not isinstance(value, Mapping):
        raise ConfigError(name, f"must be an object like {{\"max_batch_size\": 128}}, got {_describe(value)}")
    for key in value:
        if key not in _BATCHING_FIELDS and key not in _BATCHING_IGNORED:
            raise ConfigError(f"{name}.{key}", f"is not a batching parameter ({', '.join(_BATCHING_FIELDS)})")
    parameters = BatchingParameters(**{key: _BATCHING_FIELDS[key](f"{name}.{key}", v)
                                       for key, v in value.items() if key in _BATCHING_FIELDS})
    sizes = parameters.allowed_batch_sizes
    if sizes and sizes[-1] != parameters.max_batch_size:
        raise ConfigError(f"{name}.allowed_batch_sizes", f"must end with max_batch_size ({parameters.max_batch_size}), "
                          f"as TF Serving requires; got {list(sizes)}")
    return parameters


@dataclass(frozen=True)
class ProcessorConfig:
    """Validated configuration. Comments give what uses each value; defaults are DeepRec's."""

    savedmodel_dir: str = _option("", _string)            # required: the SavedModel giving graph and signature
    model_name: str = _option("default", _string)        # names the model in metrics (and hosts' URLs)
    savedmodel_version: int = _option(-1, lambda n, v: _integer(n, v, minimum=-1, maximum=2**62))  # serve this integer version of savedmodel_dir alone; -1: the newest
    checkpoint_dir: str = _option("", _string)            # newest complete checkpoint is restored; "": SavedModel's variables
    signature_name: str = _option("serving_default", _string)
    saved_model_tags: List[str] = _option(["serve"], _tags)  # the MetaGraphDef to load: the one of this tag set
    strict_signature_name: bool = _option(False, _boolean)  # a request naming another signature: 400 (else served)
    model_store_type: str = _option("local", _choice(MODEL_STORE_TYPES))  # "oss"/"hdfs": dirs are oss:// / hdfs:// URLs
    session_num: int = _option(1, _at_least(1))           # sessions in the session group
    select_session_policy: str = _option("MOD", _choice(SELECT_SESSION_POLICIES))  # thread id modulo, or round robin
    use_per_session_threads: bool = _option(False, _boolean)  # each session gets its own thread pools
    enable_inline_execute: bool = _option(False, _boolean)    # run ops in the calling thread (TF inter_op = -1)
    inter_op_parallelism_threads: int = _option(0, _integer)  # 0: TensorFlow picks
    intra_op_parallelism_threads: int = _option(0, _integer)  # 0: TensorFlow picks
    model_update_inter_threads: int = _option(0, _integer)    # thread pools for restores during updates
    model_update_intra_threads: int = _option(0, _integer)
    omp_num_threads: Optional[int] = _option(None, lambda n, v: _integer_or_text(n, v, 1))  # OMP_NUM_THREADS; None: unset
    kmp_blocktime: Optional[int] = _option(None, _integer_or_text)           # KMP_BLOCKTIME in ms; None: unset
    init_timeout_minutes: float = _option(-1, _wait_minutes)  # first version to appear: -1 forever, 0 fail at once
    max_request_bytes: int = _option(64 << 20, _at_least(1))       # larger requests get 400
    max_tensor_elements: int = _option(1 << 24, _at_least(1))      # per input tensor; larger get 400
    warmup_file_name: str = _option("", _string)          # serialized PredictRequest(s) run before a version serves
    warmup_iterations: int = _option(1, _at_least(1))     # times each warmup request runs per new version
    enable_model_warmup: bool = _option(True, _boolean)   # false: no warmup at all (TF Serving's flag)
    poll_interval_seconds: Optional[float] = _option(None, _optional(_number))  # None: 5 local, 60 remote; 0: no polling
    version_policy: str = _option("availability_preserving", _choice(VERSION_POLICIES))
    rollback_keep: int = _option(2, _at_least(1))         # earlier versions rollback() can return to
    # Feature store: embedding tables served outside the session (see feature_store/). "local" with no
    # embedding selected keeps them in the session, as saved.
    feature_store_type: str = _option("local", _feature_store_type)  # DeepRec's "memory" / "cluster_redis" too
    embedding_names: List[str] = _option([], _names)     # variables to serve from the store
    embedding_min_rows: int = _option(0, _integer)        # > 0: also every gathered-only variable this tall
                                                          # (redis with no selection: every one)
    embedding_default_value: float = _option(0.0, _finite)  # what ids a table lacks read as
    redis_url: str = _option("", _string)                 # host:port, or several nodes of a Redis Cluster
    redis_password: str = _secret()
    read_thread_num: int = _option(4, _at_least(1))       # connections per Redis server for lookups
    update_thread_num: int = _option(2, _at_least(1))     # writers importing a version into Redis
    feature_store_namespace: str = _option("", _string)   # replicas sharing tables; "": model_name
    feature_store_partitions: int = _option(16, _at_least(1))  # hashes per table (spread over a cluster)
    feature_store_cache_bytes: int = _option(0, lambda n, v: _integer(n, v, maximum=2**62))  # Redis: hot rows kept here
    monolith_tables: Dict[str, str] = _option({}, _table_paths)  # variable -> Monolith dump "<dir>/<table>"
    layout_filters: List[str] = _option([], _layout_filters)     # which Monolith shards this instance imports
    serialize_protocol: str = _option("protobuf", _choice(SERIALIZE_PROTOCOLS))
    oss_endpoint: str = _option("", _string)
    oss_access_id: str = _secret()
    oss_access_key: str = _secret()
    webhdfs_url: str = _option("", _string)               # http(s)://namenode:port; "": http://<namenode>:9870
    hdfs_user: str = _option("", _string)                 # "": HADOOP_USER_NAME, else the process's user
    local_cache_dir: str = _option("", _string)           # remote versions are loaded from here; "": <tmp>/processor-cache
    download_threads: int = _option(4, _at_least(1))      # files of a remote version downloaded at once
    download_retries: int = _option(3, _integer)          # retries of a failed file download, with backoff
    timeline_start_step: int = _option(0, _integer)
    timeline_interval_step: int = _option(0, _integer)
    timeline_trace_count: int = _option(0, _integer)
    timeline_path: str = _option("", _string)
    ev_storage_type: str = _option("DEFAULT", _ev_storage_type)  # DeepRec's number (0, 1, 12) or name
    ev_storage_path: str = _option("", _string)
    ev_storage_size: List[int] = _option([], _sizes)      # bytes per tier; see ev_storage_sizes
    # DeepRec's shard_embedding: embedding_names ("a;b") split over shard_instance_count instances
    shard_embedding: bool = _option(False, _boolean)
    shard_instance_count: int = _option(0, _integer)
    id_type: str = _option("", _choice(("", "string", "int64")))
    request_log: Optional[RequestLogConfig] = _option(None, _optional(_request_log))  # see RequestLogConfig
    # TF Serving's --enable_batching: concurrent requests merged into one run (docs/batching.md)
    enable_batching: bool = _option(False, _boolean)
    batching_parameters: Optional[BatchingParameters] = _option(None, _optional(_batching_parameters))
    unknown_keys: List[str] = field(default_factory=list)  # keys present in the JSON that we ignore
    not_honoured: List[str] = field(default_factory=list)  # keys of DeepRec's this build reads and cannot honour

    @property
    def uses_feature_store(self) -> bool:
        """Whether embeddings are served outside the session: always with Redis (by default every
        variable the signature only gathers rows from, as DeepRec moves every embedding variable),
        locally when some are selected (a variable of monolith_tables is), and in two tiers (whose disk
        files the control plane writes, for EmbeddingVariables too)."""
        return (self.feature_store_type == "redis" or bool(self.embedding_names) or self.embedding_min_rows > 0
                or bool(self.monolith_tables) or self.ev_storage_type == "DRAM_SSDHASH")

    @property
    def effective_poll_interval(self) -> float:
        if self.poll_interval_seconds is not None:
            return float(self.poll_interval_seconds)
        return LOCAL_POLL_INTERVAL_SECONDS if self.model_store_type == "local" else REMOTE_POLL_INTERVAL_SECONDS

    @property
    def ev_storage_sizes(self) -> List[int]:
        """ev_storage_size as DeepRec uses it: for DRAM_SSDHASH, padded to four tiers with 1 GiB each."""
        sizes = list(self.ev_storage_size)
        if self.ev_storage_type == "DRAM_SSDHASH":
            sizes += [1 << 30] * (EV_STORAGE_TIERS - len(sizes))
        return sizes

    def redacted(self) -> dict:
        """The config as a dict with secrets masked: safe to log or report."""
        values = dataclasses.asdict(self)
        for name in SECRET_FIELDS:
            if values.get(name):
                values[name] = "***"
        return values


_FIELDS = {f.name: f.metadata["parse"] for f in dataclasses.fields(ProcessorConfig) if "parse" in f.metadata}
SECRET_FIELDS = tuple(f.name for f in dataclasses.fields(ProcessorConfig) if not f.repr)


def _check_consistency(config: ProcessorConfig) -> None:
    if not config.savedmodel_dir.strip():
        raise ConfigError("savedmodel_dir", "must not be empty")
    if not config.signature_name:
        raise ConfigError("signature_name", "must not be empty")
    if config.feature_store_type == "redis" and not config.redis_url:
        raise ConfigError("redis_url", "is required when feature_store_type is 'redis'")
    if config.ev_storage_type == "DRAM_SSDHASH":
        if not config.ev_storage_path.strip():
            raise ConfigError("ev_storage_path", "is required when ev_storage_type is 12 (DRAM_SSDHASH): the "
                              "directory of the disk tier (a local SSD)")
        if "://" in config.ev_storage_path:
            raise ConfigError("ev_storage_path", f"must be a local directory, got {config.ev_storage_path!r}")
    if config.batching_parameters is not None and not config.enable_batching:
        raise ConfigError("batching_parameters", "is set but enable_batching is not true: add \"enable_batching\": "
                          "true to merge requests (or remove batching_parameters)")
    if config.timeline_trace_count > 0 and not config.timeline_path:
        raise ConfigError("timeline_path", "is required when timeline_trace_count > 0")
    if config.shard_embedding:  # DeepRec's own checks (model_config.cc)
        if config.feature_store_type != "local":
            raise ConfigError("shard_embedding", "needs feature_store_type 'local' (as DeepRec's processor does)")
        if not config.embedding_names or config.shard_instance_count < 1 or not config.id_type:
            raise ConfigError("shard_embedding", "needs embedding_names, shard_instance_count (>= 1) and id_type")
    if config.timeline_path.startswith("oss://"):
        if not config.timeline_path[len("oss://"):].split("/", 1)[0]:
            raise ConfigError("timeline_path", f"must name a bucket: oss://bucket/path, got {config.timeline_path!r}")
        for name, variable in OSS_ENVIRONMENT.items():
            if not getattr(config, name) and not os.environ.get(variable):
                raise ConfigError(name, f"is required to upload the timeline to OSS (or set {variable})")
    elif "://" in config.timeline_path:
        raise ConfigError("timeline_path", f"must be a local directory or oss://bucket/path, got "
                          f"{config.timeline_path!r}")
    if config.model_store_type == "oss":
        for name, variable in OSS_ENVIRONMENT.items():
            if not getattr(config, name) and not os.environ.get(variable):
                raise ConfigError(name, f"is required when model_store_type is 'oss' (or set {variable})")
    for name in ("savedmodel_dir", "checkpoint_dir"):
        _check_store_url(name, getattr(config, name), config.model_store_type)


def _check_store_url(name: str, path: str, store_type: str) -> None:
    scheme = path.split("://", 1)[0] if "://" in path else ""
    if not path or scheme == ("" if store_type == "local" else store_type):
        if scheme == "oss" and not path[len("oss://"):].split("/", 1)[0]:
            raise ConfigError(name, f"must name a bucket: oss://bucket/path, got {path!r}")
        return
    if store_type == "local":
        raise ConfigError(name, f"starts with {scheme}:// but model_store_type is 'local'"
                          + (f": set it to '{scheme}'" if scheme in MODEL_STORE_TYPES else ""))
    raise ConfigError(name, f"must start with {store_type}:// when model_store_type is '{store_type}', got {path!r}")


def _split_redis_url(url: str) -> Tuple[str, str]:
    """(redis_url without the passwords nodes carry as `redis://[user]:password@host:port`, the password).
    Neither error shows a password."""
    nodes, passwords = [], set()
    for node in url.split(","):
        scheme, separator, address = node.strip().rpartition("://")
        userinfo, at, hostport = address.rpartition("@")
        if at:
            passwords.add(userinfo.partition(":")[2])
        nodes.append(f"{scheme}{separator}{hostport}" if node.strip() else node)
    if len(passwords) > 1:
        raise ConfigError("redis_url", "names different passwords for its nodes (not shown)")
    return ",".join(nodes), passwords.pop() if passwords else ""


def parse_config(source: Union[Mapping[str, Any], str, bytes, os.PathLike]) -> ProcessorConfig:
    """Parses a config from a dict, a JSON document, or the path of a JSON file."""
    document = _load_document(source)
    if not isinstance(document, Mapping):
        raise ConfigError("", f"the config must be a JSON object, got {type(document).__name__}")
    if "savedmodel_dir" not in document:
        raise ConfigError("savedmodel_dir", "is required")
    values = {}
    unknown, not_honoured = [], []
    for key, value in document.items():
        if value is None:
            continue  # DeepRec's reader: a null field is an absent one
        if key in NOT_HONOURED:
            not_honoured.append(key)
            _log_once(f"not honouring config key {key}: {NOT_HONOURED[key]}")
            continue
        parser = _FIELDS.get(key)
        if parser is None:
            unknown.append(key)
            continue
        values[key] = parser(key, value)
    _deeprec_defaults(document, values)
    if values.get("redis_url"):
        values["redis_url"], url_password = _split_redis_url(values["redis_url"])
        if url_password:
            if values.get("redis_password", url_password) != url_password:
                raise ConfigError("redis_url", "holds a password that differs from redis_password (neither is shown)")
            values["redis_password"] = url_password
    if unknown:
        logger.warning("ignoring unknown config keys: %s", ", ".join(sorted(unknown)))
    config = ProcessorConfig(**values, unknown_keys=sorted(unknown), not_honoured=sorted(not_honoured))
    _check_consistency(config)
    if config.enable_inline_execute and config.inter_op_parallelism_threads > 0:
        _log_once(f"enable_inline_execute wins over inter_op_parallelism_threads "
                  f"({config.inter_op_parallelism_threads}): requests run in the calling thread, so no serving "
                  f"inter-op pool is sized by it (as in DeepRec, which sets RUN_ALL_KERNELS_INLINE)")
    if config.ev_storage_type == "DRAM_SSDHASH" and config.feature_store_type == "redis":
        _log_once("ev_storage_type 12 (DRAM_SSDHASH) applies to local tables; with feature_store_type 'redis' the "
                  "tables are in Redis and ev_storage_path is not used")
    if config.shard_embedding:
        _log_once(f"shard_embedding: every instance serves every row of {', '.join(config.embedding_names)} from "
                  f"its local feature store; DeepRec keeps 1/{config.shard_instance_count} of each per instance")
    return config


_logged: set = set()


def _log_once(message: str) -> None:
    """A warning about the config, once per process (hosts parse one config many times)."""
    if message not in _logged:
        _logged.add(message)
        logger.warning("%s", message)


def _deeprec_defaults(document: Mapping[str, Any], values: Dict[str, Any]) -> None:
    """DeepRec's defaults a user would notice: without thread counts, SCHEDULABLE_CPUS (when the
    environment sets it, as DeepRec's deployments do) is shared half and half between the inter-op and
    intra-op pools."""
    cpus = os.environ.get("SCHEDULABLE_CPUS", "").strip()
    if not cpus.isdigit() or int(cpus) < 1:
        return
    for key in ("inter_op_parallelism_threads", "intra_op_parallelism_threads"):
        if document.get(key) is None:
            values[key] = max(1, int(cpus) // 2)


def _load_document(source: Any) -> Any:
    if isinstance(source, Mapping):
        return source
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError("", f"the config is not UTF-8: {e}") from None
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise ConfigError("", f"the config must be a dict, a JSON string or a file path, got {type(source).__name__}")
    text = source.lstrip("\ufeff")  # a UTF-8 byte order mark, as some editors write
    if not text.lstrip().startswith(("{", "[")):  # JSON text; anything else names a file
        # Config text is never shown (it may hold passwords and keys); a path is.
        if any(c in text for c in '{}"\n') or len(text) > 4096:
            raise ConfigError("", "the config is not valid JSON: it must start with '{' (its text is not shown)")
        try:
            with open(text, encoding="utf-8-sig") as f:
                text = f.read()
        except UnicodeDecodeError as e:
            raise ConfigError("", f"the config file is not UTF-8: {e.reason} at byte {e.start}") from None
        except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
            reason = e.strerror if isinstance(e, OSError) else str(e)
            raise ConfigError("", f"the config is neither a JSON object nor a readable file: {reason}: {text!r}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError("", f"the config is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise ConfigError("", "the config is not valid JSON: it nests too deeply") from None
