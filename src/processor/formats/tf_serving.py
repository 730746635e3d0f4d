"""TF Serving's configuration files, in its protobuf text format, read into typed values:

- `--model_config_file`: a ModelServerConfig (tensorflow_serving/config/model_server_config.proto),
  parsed with the message classes of TF Serving's own `tensorflow-serving-api` package;
- `--batching_parameters_file`: a BatchingParameters
  (tensorflow_serving/servables/tensorflow/session_bundle_config.proto), `--monitoring_config_file`:
  a MonitoringConfig (tensorflow_serving/config/monitoring_config.proto), and `--ssl_config_file`: an
  SSLConfig (tensorflow_serving/config/ssl_config.proto), which that package does not ship: their
  descriptors are built here with the same field numbers and types;
- `--grpc_channel_arguments`: "key=value,..." as TF Serving's server.cc splits it.

Errors are ConfigError naming the flag, the file and, for a syntax error, TF Serving's own line and
column; the checks are TF Serving's (a platform it serves, unique names, a label on a version the
policy can serve).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

from ..config import BatchingParameters, _batching_parameters
from ..errors import ConfigError

FilePath = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class VersionPolicy:
    """model_version_policy: the newest `num_versions`, every version, or the listed `versions`."""
    kind: str = "latest"  # "latest", "all" or "specific"
    num_versions: int = 1
    versions: Tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    """One `config` of a ModelServerConfig's model_config_list."""
    name: str
    base_path: str
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: Dict[str, int] = field(default_factory=dict)


def _read(flag: str, path: FilePath) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(flag, f"cannot read {os.fspath(path)}: {e.strerror}") from None


def _parse(flag: str, text: str, what: str, message):
    from google.protobuf import text_format
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as e:  # its message holds the line:column
        raise ConfigError(flag, f"{what} is not a {message.DESCRIPTOR.name} in text format: {e}") from None


def read_model_server_config(path: FilePath) -> List[ModelConfig]:
    """The models of a `--model_config_file`."""
    return parse_model_server_config(_read("model_config_file", path), os.fspath(path))


def parse_model_server_config(text: str, what: str = "the text given") -> List[ModelConfig]:
    """The models of a ModelServerConfig in text format, checked as TF Serving checks them."""
    from tensorflow_serving.config import model_server_config_pb2
    return models_from_message(_parse("model_config_file", text, what, model_server_config_pb2.ModelServerConfig()),
                               what)


def models_from_message(config, what: str = "the config") -> List[ModelConfig]:
    """The models of a ModelServerConfig message (a parsed file, or a ReloadConfigRequest's), checked as
    TF Serving checks them."""
    flag = "model_config_file"
    if config.WhichOneof("config") == "custom_model_config":
        raise ConfigError(flag, "custom_model_config is not served here: list the models in model_config_list")
    models, names = [], set()
    for index, model in enumerate(config.model_config_list.config):
        where = f"model_config_list.config[{index}]" + (f" ({model.name!r})" if model.name else "")
        if not model.name:
            raise ConfigError(flag, f"{where}: name is required")
        if model.name in names:
            raise ConfigError(flag, f"{where}: the name {model.name!r} is given twice")
        names.add(model.name)
        if not model.base_path:
            raise ConfigError(flag, f"{where}: base_path is required")
        if model.model_platform not in ("", "tensorflow"):
            raise ConfigError(flag, f"{where}: model_platform {model.model_platform!r} is not served here "
                                    "(only 'tensorflow' SavedModels)")
        if model.HasField("logging_config"):
            raise ConfigError(flag, f"{where}: logging_config is not served here (TF Serving's log collectors are "
                                    "plugins): the config's request_log samples requests into a warmup file")
        policy = _version_policy(flag, where, model.model_version_policy)
        labels = dict(model.version_labels)
        for label, version in sorted(labels.items()):
            if version <= 0:
                raise ConfigError(flag, f"{where}: version label {label!r} names version {version}; versions are > 0")
            if policy.kind == "specific" and version not in policy.versions:
                raise ConfigError(flag, f"{where}: version label {label!r} names version {version}, which "
                                        f"model_version_policy does not serve ({', '.join(map(str, policy.versions))})")
        models.append(ModelConfig(model.name, model.base_path, policy, labels))
    if not models:
        raise ConfigError(flag, f"{what}: model_config_list names no model")
    return models


def _version_policy(flag: str, where: str, policy) -> VersionPolicy:
    kind = policy.WhichOneof("policy_choice") or "latest"
    if kind == "latest":
        return VersionPolicy("latest", num_versions=policy.latest.num_versions or 1)
    if kind == "all":
        return VersionPolicy("all", num_versions=0)
    versions = tuple(sorted(set(policy.specific.versions)))
    if not versions or versions[0] <= 0:
        raise ConfigError(flag, f"{where}: model_version_policy.specific needs versions > 0, got "
                                f"{list(policy.specific.versions)}")
    return VersionPolicy("specific", num_versions=len(versions), versions=versions)


def _message_class(proto: str, message: str, define, dependency=()):
    """The class of `message` in a file of package processor.tf_serving that `define(file, field)`
    fills (`field`: FieldDescriptorProto, for its LABEL_ and TYPE_ constants), added to protobuf's
    default pool: a TF Serving message that tensorflow-serving-api does not ship, with its field numbers
    and types."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    file = descriptor_pb2.FileDescriptorProto(name=f"processor/{proto}", package="processor.tf_serving",
                                              syntax="proto3", dependency=list(dependency))
    define(file, descriptor_pb2.FieldDescriptorProto)
    pool = descriptor_pool.Default()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"processor.tf_serving.{message}"))


@functools.lru_cache(maxsize=None)
def _batching_parameters_message():
    """BatchingParameters as session_bundle_config.proto defines it (fields 1-7), made once."""
    from google.protobuf import wrappers_pb2  # noqa: F401 - puts wrappers.proto in the default pool

    def define(file, spec):
        message = file.message_type.add(name="BatchingParameters")
        for number, name, wrapper in ((1, "max_batch_size", "Int64Value"), (2, "batch_timeout_micros", "Int64Value"),
                                      (3, "max_enqueued_batches", "Int64Value"), (4, "num_batch_threads", "Int64Value"),
                                      (5, "thread_pool_name", "StringValue")):
            message.field.add(name=name, number=number, label=spec.LABEL_OPTIONAL, type=spec.TYPE_MESSAGE,
                              type_name=f".google.protobuf.{wrapper}")
        message.field.add(name="allowed_batch_sizes", number=6, label=spec.LABEL_REPEATED, type=spec.TYPE_INT64)
        message.field.add(name="pad_variable_length_inputs", number=7, label=spec.LABEL_OPTIONAL, type=spec.TYPE_BOOL)
    return _message_class("tf_serving_batching_parameters.proto", "BatchingParameters", define,
                          dependency=["google/protobuf/wrappers.proto"])


@functools.lru_cache(maxsize=None)
def _monitoring_config_message():
    """MonitoringConfig and PrometheusConfig as monitoring_config.proto defines them, made once."""
    def define(file, spec):
        prometheus = file.message_type.add(name="PrometheusConfig")
        prometheus.field.add(name="enable", number=1, label=spec.LABEL_OPTIONAL, type=spec.TYPE_BOOL)
        prometheus.field.add(name="path", number=2, label=spec.LABEL_OPTIONAL, type=spec.TYPE_STRING)
        monitoring = file.message_type.add(name="MonitoringConfig")
        monitoring.field.add(name="prometheus_config", number=1, label=spec.LABEL_OPTIONAL, type=spec.TYPE_MESSAGE,
                             type_name=".processor.tf_serving.PrometheusConfig")
    return _message_class("tf_serving_monitoring_config.proto", "MonitoringConfig", define)


# TF Serving's PrometheusExporter::kPrometheusPath: where the metrics are without a monitoring config.
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def read_monitoring_config(path: FilePath) -> Optional[str]:
    """A `--monitoring_config_file`: the path the REST port serves Prometheus metrics at, or None when
    prometheus_config.enable is false (no metrics endpoint, as TF Serving)."""
    return parse_monitoring_config(_read("monitoring_config_file", path), os.fspath(path))


def parse_monitoring_config(text: str, what: str = "the text given") -> Optional[str]:
    flag = "monitoring_config_file"
    parsed = _parse(flag, text, what, _monitoring_config_message()())
    prometheus = parsed.prometheus_config
    if not prometheus.enable:
        return None
    path = prometheus.path or PROMETHEUS_PATH
    if not path.startswith("/") or path.startswith("/v1/"):
        raise ConfigError(flag, f"{what}: prometheus_config.path must be an absolute path outside /v1/, got {path!r}")
    return path


@functools.lru_cache(maxsize=None)
def _ssl_config_message():
    """SSLConfig as ssl_config.proto defines it, made once."""
    def define(file, spec):
        message = file.message_type.add(name="SSLConfig")
        for number, name in ((1, "server_key"), (2, "server_cert"), (3, "custom_ca")):
            message.field.add(name=name, number=number, label=spec.LABEL_OPTIONAL, type=spec.TYPE_STRING)
        message.field.add(name="client_verify", number=4, label=spec.LABEL_OPTIONAL, type=spec.TYPE_BOOL)
    return _message_class("tf_serving_ssl_config.proto", "SSLConfig", define)


@dataclass(frozen=True)
class SslConfig:
    """A `--ssl_config_file`: PEM text, as TF Serving's SSLConfig holds it. The key never shows in a repr."""
    server_key: str = field(repr=False)
    server_cert: str
    custom_ca: str = ""
    client_verify: bool = False


def read_ssl_config(path: FilePath) -> SslConfig:
    return parse_ssl_config(_read("ssl_config_file", path), os.fspath(path))


def parse_ssl_config(text: str, what: str = "the text given") -> SslConfig:
    flag = "ssl_config_file"
    try:
        parsed = _parse(flag, text, what, _ssl_config_message()())
    except ConfigError:  # the parser's message may quote a piece of the key
        raise ConfigError(flag, f"{what} is not an SSLConfig in text format (the parser's message is not shown: "
                                f"it may quote the key)") from None
    if not parsed.server_key or not parsed.server_cert:
        raise ConfigError(flag, f"{what}: server_key and server_cert are required (PEM text, not paths)")
    if parsed.client_verify and not parsed.custom_ca:
        raise ConfigError(flag, f"{what}: client_verify needs custom_ca, the authority client certificates are "
                                f"checked against")
    return SslConfig(parsed.server_key, parsed.server_cert, parsed.custom_ca, parsed.client_verify)


def parse_grpc_channel_arguments(text: str) -> List[Tuple[str, Union[int, str]]]:
    """`--grpc_channel_arguments`: "key=value,..." (TF Serving's server.cc: a value that is a 32-bit
    integer is passed as one, others as strings)."""
    arguments = []
    for item in text.split(",") if text else []:
        key, equals, value = item.partition("=")
        if not key.strip() or not equals:
            raise ConfigError("grpc_channel_arguments", f"{item!r} is not key=value")
        try:
            number = int(value)
            arguments.append((key.strip(), number if -2**31 <= number < 2**31 else value))
        except ValueError:
            arguments.append((key.strip(), value))
    return arguments


def read_batching_parameters(path: FilePath) -> BatchingParameters:
    """A `--batching_parameters_file`."""
    return parse_batching_parameters(_read("batching_parameters_file", path), os.fspath(path))


def parse_batching_parameters(text: str, what: str = "the text given") -> BatchingParameters:
    """BatchingParameters in text format, with TF Serving's defaults for what it leaves out."""
    flag = "batching_parameters_file"
    parsed = _parse(flag, text, what, _batching_parameters_message()())
    values = {name: getattr(parsed, name).value for name in
              ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")
              if parsed.HasField(name)}
    if parsed.allowed_batch_sizes:
        values["allowed_batch_sizes"] = list(parsed.allowed_batch_sizes)
    return _batching_parameters(flag, values)
