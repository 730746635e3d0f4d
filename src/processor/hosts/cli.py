"""`python -m processor`: serve a model over HTTP, look at what a config would serve, build warmup files.

    python -m processor serve --config cfg.json --model-name NAME --port 8501
    python -m processor inspect --config cfg.json
    python -m processor versions --config cfg.json
    python -m processor warmup build --output warmup.tfrecord --from-log requests.tfrecord
    python -m processor warmup build --output warmup.tfrecord --from-json rows.json --config cfg.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from typing import List, Optional

from ..config import parse_config
from ..errors import ConfigError, ProcessorError


def _versions(config) -> dict:
    """Every full version and delta the config's store holds, complete or not, and why not."""
    from ..loading.checkpoints import check_version, list_versions, read_state_file
    from ..loading.deltas import incremental_dir
    from ..stores import open_model_store
    from ..loading.savedmodels import has_saved_model, list_savedmodel_versions
    store = open_model_store(config)
    store.refresh()
    if has_saved_model(store, config.savedmodel_dir):
        savedmodels = [{"path": config.savedmodel_dir, "version": None, "complete": True, "reason": ""}]
    else:
        savedmodels = [{"path": v.path, "version": v.version, "complete": v.complete, "reason": v.reason}
                       for v in list_savedmodel_versions(store, config.savedmodel_dir,
                                                         restores_variables=not config.checkpoint_dir)]
    checkpoints, deltas = [], []
    if config.checkpoint_dir:
        found = list_versions(store, config.checkpoint_dir)
        checkpoints = [{"prefix": v.prefix, "step": v.step, "complete": v.complete, "reason": v.reason} for v in found]
        newest = [v for v in found if v.complete]
        if newest:
            directory = incremental_dir(newest[-1].prefix)
            deltas = [{"prefix": d.prefix, "step": d.step, "complete": d.complete, "reason": d.reason}
                      for d in sorted((check_version(store, p) for p in read_state_file(store, directory)),
                                      key=lambda d: d.step) if d.step > newest[-1].step]
    return {"savedmodels": savedmodels, "checkpoints": checkpoints, "deltas": deltas}


def _signatures(config, loader, candidate) -> dict:
    """The signatures of the candidate's SavedModel (loaded without restoring a checkpoint), by name, the
    main one first."""
    from ..facade import parse_signatures
    from ..loading import control
    servable = control.plan_load(control.load_request(config, loader.localize(candidate).savedmodel.path)).load()
    code, body = servable.process(b"")
    if code != 200:
        raise ProcessorError(f"the SavedModel's signatures: {body.decode('utf-8', 'replace')}")
    return parse_signatures(body)


def _session_threads(config) -> dict:
    """The thread settings a load gives its session: the ConfigProto the data plane builds from the
    config (cpp/model/session_settings.cc), read back field by field (tensorflow/core/protobuf/
    config.proto: intra_op_parallelism_threads = 2, use_per_session_threads = 9, and the inter-op
    pools, session_inter_op_thread_pool = 12: ThreadPoolOptionProto {num_threads = 1, global_name = 2})."""
    from .. import _core
    from ..formats.checkpoint_index import read_varint
    from ..loading.control import session_settings

    def fields(data: bytes):
        pos = 0
        while pos < len(data):
            tag, pos = read_varint(data, pos)
            if tag & 7 == 0:
                value, pos = read_varint(data, pos)
            else:  # length-delimited: the only other kind the data plane writes here
                size, pos = read_varint(data, pos)
                value, pos = data[pos:pos + size], pos + size
            yield tag >> 3, value

    proto = _core.session_config(session_settings(config).SerializeToString())
    report = {"intra_op_parallelism_threads": 0, "use_per_session_threads": False, "inter_op_pools": []}
    for field, value in fields(proto):
        if field == 2:
            report["intra_op_parallelism_threads"] = value
        elif field == 9:
            report["use_per_session_threads"] = bool(value)
        elif field == 12:
            pool = dict(fields(value))
            report["inter_op_pools"].append({"threads": pool.get(1, 0), "shared_as": pool.get(2, b"").decode()})
    serving, update = report["inter_op_pools"][:-1], report["inter_op_pools"][-1]
    return {"intra_op_parallelism_threads": report["intra_op_parallelism_threads"],
            "use_per_session_threads": report["use_per_session_threads"],
            "enable_inline_execute": config.enable_inline_execute, "serving_pools": serving, "update_pool": update}


def cmd_versions(args) -> int:
    config = parse_config(args.config)
    found = _versions(config)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    def show(entries, key, none):
        for entry in entries:
            mark = "complete" if entry["complete"] else f"incomplete: {entry['reason']}"
            print(f"  {entry[key]}  {mark}")
        if not entries:
            print(f"  {none}")
    print("SavedModels:")
    show(found["savedmodels"], "path", f"(none in {config.savedmodel_dir})")
    if config.checkpoint_dir:
        print("Checkpoints:")
        show(found["checkpoints"], "prefix", f"(none under {config.checkpoint_dir})")
        print("Deltas after the newest complete checkpoint:")
        show(found["deltas"], "prefix", "(none)")
    return 0


def cmd_inspect(args) -> int:
    from ..loading.loader import VersionLoader
    config = parse_config(args.config)
    loader = VersionLoader(config)
    try:
        candidate = loader.discover()
        report = {"model_store_type": config.model_store_type,
                  "would_serve": candidate.describe() if candidate else None,
                  "reason": None if candidate else loader.explain_missing(),
                  "versions": _versions(config),
                  "signatures": _signatures(config, loader, candidate) if candidate else None,
                  "session_threads": _session_threads(config),
                  "config": config.redacted()}
    finally:
        loader.close()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if candidate else 1
    print(f"model store: {config.model_store_type}")
    print(f"would serve: {report['would_serve'] or 'nothing: ' + report['reason']}")
    found = report["versions"]
    print(f"versions: {sum(v['complete'] for v in found['savedmodels'])} complete SavedModel(s), "
          f"{sum(v['complete'] for v in found['checkpoints'])} complete checkpoint(s) of "
          f"{len(found['checkpoints'])}, {len(found['deltas'])} pending delta(s)  (details: versions)")
    threads = report["session_threads"]
    pools = ", ".join(f"{pool['threads'] or 'TF-sized'}" for pool in threads["serving_pools"])
    print(f"threads: intra-op {threads['intra_op_parallelism_threads'] or 'TF-sized (process-wide)'}; serving inter-op pool(s): "
          f"{'none, ops run in the caller' if threads['enable_inline_execute'] else pools}; updates' pool: "
          f"{threads['update_pool']['threads'] or 'TF-sized'}")
    for index, signature in enumerate((report["signatures"] or {}).values()):
        main = " (main)" if index == 0 else ""
        print(f"signature '{signature['signature_name']}' ({signature['method_name']}){main}:")
        for kind in ("inputs", "outputs"):
            for spec in signature[kind]:
                shape = "unknown rank" if spec.get("unknown_rank") else spec["shape"]
                print(f"  {kind[:-1]:<6} {spec['alias']:<24} {spec['dtype']:<10} {shape}  ({spec['tensor_name']})")
    return 0 if candidate else 1


def cmd_warmup_build(args) -> int:
    from .. import predict_pb2, tensors
    from ..formats.tfrecord import iter_records, write_record
    records: List[bytes] = []
    if args.from_log:
        for path in args.from_log:
            for index, record in enumerate(iter_records(path)):
                try:
                    predict_pb2.PredictRequest.FromString(record)
                except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
                    raise ProcessorError(f"{path}: record {index} is not a PredictRequest: {e}") from None
                records.append(record)
    else:
        if not args.config:
            raise ProcessorError("--from-json needs --config: the signature gives the inputs' dtypes")
        from .rest_json import RestRequestError, parse_predict_body
        from ..loading.loader import VersionLoader
        config = parse_config(args.config)
        loader = VersionLoader(config)
        try:
            candidate = loader.discover()
            if candidate is None:
                raise ProcessorError(loader.explain_missing())
            signatures = _signatures(config, loader, candidate)
        finally:
            loader.close()
        with open(args.from_json, encoding="utf-8") as f:
            document = json.load(f)
        bodies = document if isinstance(document, list) else [document]
        for index, body in enumerate(bodies):
            try:
                inputs, _, signature_name = parse_predict_body(body, signatures)
            except RestRequestError as e:
                raise ProcessorError(f"{args.from_json}: request {index}: {e}") from None
            request = predict_pb2.PredictRequest(signature_name=signature_name)
            for name, array in inputs.items():
                tensors.to_array_proto(array, request.inputs[name])
            records.append(request.SerializeToString())
    if args.max_records:
        records = records[-args.max_records:]
    if not records:
        raise ProcessorError("no requests to write")
    with open(args.output, "wb") as f:
        for record in records:
            write_record(f, record)
    print(f"wrote {len(records)} warmup request(s) to {args.output}")
    return 0


def serve_options(args):
    """What `serve` serves: the models (TF Serving's --model_name/--model_base_path or
    --model_config_file, or one model from --config) and the Processor config they load with (--config
    as a base, with a "models": {name: {...}} section of per-model settings), with
    --file_system_poll_wait_seconds, --enable_batching and --batching_parameters_file over it."""
    from ..config import _load_document
    from ..formats.tf_serving import ModelConfig, read_model_server_config
    from ..server.model_server import ServerOptions
    if args.model_base_path and args.model_config_file:
        raise ConfigError("", "give --model_base_path or --model_config_file, not both")
    if not (args.config or args.model_base_path or args.model_config_file):
        raise ConfigError("", "give --config, --model_base_path or --model_config_file")
    base = dict(_load_document(args.config)) if args.config else {}
    overrides = base.pop("models", {})
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise ConfigError("models", "must map model names to objects of config fields")
    if args.model_config_file:
        models = read_model_server_config(args.model_config_file)
        unknown = sorted(set(overrides) - {m.name for m in models})
        if unknown:
            raise ConfigError("models", f"names models the --model_config_file does not: {', '.join(unknown)}")
    elif args.model_base_path:
        models = [ModelConfig(args.model_name or "default", args.model_base_path)]
    else:
        if not base.get("savedmodel_dir"):
            raise ConfigError("savedmodel_dir", "is required")
        models = [ModelConfig(args.model_name or base.get("model_name", "default"), base["savedmodel_dir"])]
    if args.file_system_poll_wait_seconds is not None:
        base["poll_interval_seconds"] = args.file_system_poll_wait_seconds
    if args.enable_batching:
        base["enable_batching"] = True
    if args.batching_parameters_file:
        from ..formats.tf_serving import read_batching_parameters
        parameters = dataclasses.asdict(read_batching_parameters(args.batching_parameters_file))
        base["batching_parameters"] = {**parameters, "allowed_batch_sizes": list(parameters["allowed_batch_sizes"])}
    # TF Serving's session flags: --tensorflow_session_parallelism sets what the other two leave unset.
    for flag, key in (("tensorflow_intra_op_parallelism", "intra_op_parallelism_threads"),
                      ("tensorflow_inter_op_parallelism", "inter_op_parallelism_threads")):
        threads = getattr(args, flag) or args.tensorflow_session_parallelism
        if threads:
            base[key] = threads
    for flag, key in (("enable_model_warmup", "enable_model_warmup"), ("saved_model_tags", "saved_model_tags"),
                      ("num_request_iterations_for_warmup", "warmup_iterations")):
        if getattr(args, flag) is not None:
            base[key] = getattr(args, flag)
    poll = base.get("poll_interval_seconds")
    extra = {}
    if args.monitoring_config_file:
        from ..formats.tf_serving import read_monitoring_config
        extra["metrics_path"] = read_monitoring_config(args.monitoring_config_file)
    if args.ssl_config_file:
        from ..formats.tf_serving import read_ssl_config
        extra["ssl"] = read_ssl_config(args.ssl_config_file)
    if args.port and args.port == args.rest_api_port:
        raise ConfigError("rest_api_port", "must differ from --port (gRPC's)")
    from ..formats.tf_serving import parse_grpc_channel_arguments
    return ServerOptions(**extra, models=models, base=base, overrides=overrides, host=args.host, port=args.port,
                         rest_api_port=args.rest_api_port, threads=args.threads, grpc_threads=args.grpc_max_threads,
                         rest_threads=args.rest_api_num_threads, rest_timeout_ms=args.rest_api_timeout_in_ms,
                         grpc_channel_arguments=parse_grpc_channel_arguments(args.grpc_channel_arguments),
                         grpc_socket_path=args.grpc_socket_path,
                         poll_seconds=5.0 if poll is None else float(poll),
                         model_config_file=args.model_config_file,
                         model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds)


def cmd_serve(args) -> int:
    if args.version:
        from .. import __version__
        print(f"Processor {__version__} (python -m processor serve, TF Serving's APIs)")
        return 0
    from ..server.model_server import serve
    serve(serve_options(args))
    return 0


def _flag_bool(text: str) -> bool:
    """A boolean flag's value as TF Serving's flag parser takes it."""
    lowered = text.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


# tensorflow_model_server's flags (tensorflow_serving/model_servers/main.cc) that are not served here,
# and why: given, they stop the server with the reason rather than being ignored.
UNSERVED_TF_SERVING_FLAGS = {
    "max_num_load_retries": "a version that fails to load is retried with backoff (1 s doubling to 5 minutes) "
                            "until it loads or goes (docs/tf_serving.md)",
    "load_retry_interval_micros": "a version that fails to load is retried with backoff (1 s doubling to 5 minutes)",
    "allow_version_labels_for_unavailable_models": "a label may name any version the policy keeps; requests "
                                                   "for it answer NOT_FOUND until it loads",
    "platform_config_file": "only TensorFlow SavedModels are served; Processor's settings come from --config",
    "tensorflow_session_config_file": "the session's settings come from --config (docs/configuration.md)",
    "per_process_gpu_memory_fraction": "this build serves on CPU (the tensorflow-cpu wheel)",
    "xla_cpu_compilation_enabled": "XLA JIT compilation is not offered",
    "use_alts_credentials": "ALTS needs Google Cloud; --ssl_config_file is served",
    "enable_per_model_batching_parameters": "batching parameters are per model in --config's \"models\" section",
    "enable_signature_method_name_check": "Classify and Regress check the method name; Predict serves any signature",
    "prefer_tflite_model": "TensorFlow Lite models are not served",
    "num_tflite_pools": "TensorFlow Lite models are not served",
    "num_tflite_interpreters_per_pool": "TensorFlow Lite models are not served",
    "rest_api_enable_cors_support": "CORS headers are not written",
    "mixed_precision": "models run as saved",
    "thread_pool_factory_config_file": "the session's pools come from --config (session_num, enable_inline_execute)",
}


class _Unserved(argparse.Action):
    """A TF Serving flag this server does not serve: an error naming it and why."""

    def __init__(self, *args, why: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.why = why

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is a tensorflow_model_server flag not served here: {self.why}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m processor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve models over TF Serving's gRPC and REST APIs")
    serve.add_argument("--config", help="the processor config (JSON file or text): the model, or with "
                                        "--model_base_path / --model_config_file the settings every model loads with")
    serve.add_argument("--model-name", "--model_name", dest="model_name",
                       help="the model's name in requests (default: the config's model_name)")
    serve.add_argument("--model_base_path", metavar="DIR",
                       help="TF Serving's flag: the model's directory of numbered SavedModel versions")
    serve.add_argument("--model_config_file", metavar="FILE",
                       help="TF Serving's ModelServerConfig (text format): the models, their version policies and labels")
    serve.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0.0, metavar="SECONDS",
                       help="TF Serving's flag: read --model_config_file again this often and apply changes (0: never)")
    serve.add_argument("--file_system_poll_wait_seconds", type=float, metavar="SECONDS",
                       help="TF Serving's flag: how often to look for new versions (the config's poll_interval_seconds)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    serve.add_argument("--port", type=int, default=8500,
                       help="TF Serving's flag: the gRPC port (default 8500; 0: no gRPC)")
    serve.add_argument("--rest_api_port", type=int, default=8501,
                       help="TF Serving's flag: the REST port (default 8501; 0: no REST)")
    serve.add_argument("--threads", type=int, default=0, help="request threads per API (default: 2 per core for "
                                                              "REST, 8 for gRPC)")
    serve.add_argument("--monitoring_config_file", metavar="FILE",
                       help="TF Serving's MonitoringConfig (text format): where the REST port serves Prometheus "
                            "metrics, or none (default: /monitoring/prometheus/metrics)")
    serve.add_argument("--enable_batching", action="store_true",
                       help="TF Serving's flag: merge concurrent requests (docs/batching.md)")
    serve.add_argument("--batching_parameters_file", metavar="FILE",
                       help="TF Serving's BatchingParameters in text format (needs --enable_batching)")
    serve.add_argument("--enable_model_warmup", type=_flag_bool, metavar="BOOL",
                       help="TF Serving's flag: false turns warmup off (default: the config's "
                            "enable_model_warmup, true)")
    serve.add_argument("--num_request_iterations_for_warmup", type=int, metavar="N",
                       help="TF Serving's flag: times each warmup request runs (the config's warmup_iterations)")
    serve.add_argument("--saved_model_tags", metavar="TAGS",
                       help="TF Serving's flag: the tag set of the MetaGraphDef to load, comma-separated "
                            "(default serve)")
    serve.add_argument("--tensorflow_session_parallelism", type=int, metavar="N",
                       help="TF Serving's flag: intra- and inter-op threads both, where the two below are not given")
    serve.add_argument("--tensorflow_intra_op_parallelism", type=int, metavar="N",
                       help="TF Serving's flag: the config's intra_op_parallelism_threads")
    serve.add_argument("--tensorflow_inter_op_parallelism", type=int, metavar="N",
                       help="TF Serving's flag: the config's inter_op_parallelism_threads")
    serve.add_argument("--rest_api_num_threads", type=int, default=0, metavar="N",
                       help="TF Serving's flag: REST request threads (default --threads)")
    serve.add_argument("--rest_api_timeout_in_ms", type=int, default=30000, metavar="MS",
                       help="TF Serving's flag: a REST predict, classify or regress taking longer answers 504 "
                            "(default 30000; 0: no limit)")
    serve.add_argument("--grpc_max_threads", type=int, default=0, metavar="N",
                       help="TF Serving's flag: gRPC request threads (default --threads, else 8)")
    serve.add_argument("--grpc_channel_arguments", default="", metavar="KEY=VALUE,...",
                       help="TF Serving's flag: gRPC server channel arguments, e.g. grpc.max_connection_age_ms=2000")
    serve.add_argument("--ssl_config_file", metavar="FILE",
                       help="TF Serving's flag: its SSLConfig in text format (PEM key and certificate): gRPC over TLS")
    serve.add_argument("--grpc_socket_path", default="", metavar="PATH",
                       help="TF Serving's flag: serve gRPC on this UNIX socket too")
    serve.add_argument("--version", action="store_true", help="TF Serving's flag: print the version and exit")
    for flag, why in UNSERVED_TF_SERVING_FLAGS.items():
        serve.add_argument(f"--{flag}", nargs="?", action=_Unserved, why=why, help=argparse.SUPPRESS)
    serve.set_defaults(run=cmd_serve)

    inspect = commands.add_parser("inspect", help="the signature, the versions found and what would be served")
    inspect.add_argument("--config", required=True)
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(run=cmd_inspect)

    versions = commands.add_parser("versions", help="full and delta versions in the store, and their completeness")
    versions.add_argument("--config", required=True)
    versions.add_argument("--json", action="store_true", help="print JSON")
    versions.set_defaults(run=cmd_versions)

    warmup = commands.add_parser("warmup", help="warmup files")
    warmup_commands = warmup.add_subparsers(dest="warmup_command", required=True)
    build = warmup_commands.add_parser("build", help="write a warmup file (TFRecord of PredictRequests)")
    build.add_argument("--output", required=True, help="the warmup file to write")
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-log", nargs="+", metavar="LOG", help="request_log files (rotated ones too)")
    source.add_argument("--from-json", metavar="ROWS.json",
                        help="TF Serving REST bodies ({\"instances\": ...} or {\"inputs\": ...}), one or a list")
    build.add_argument("--config", help="with --from-json: the config whose signature types the values")
    build.add_argument("--max-records", type=int, default=0, help="keep only the newest N requests")
    build.set_defaults(run=cmd_warmup_build)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (ProcessorError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
