"""`python -m processor serve`: the models of a config served over TF Serving's gRPC API (C++,
processor._grpc) and its REST API (aiohttp), until SIGINT or SIGTERM.

Startup follows TF Serving's order: every model loads first, then the ports open (a client that can
connect finds the models ready). A `--model_config_file` is read again every
`--model_config_file_poll_wait_seconds` and applied when it changed (models added, removed or changed;
the others untouched), as HandleReloadConfigRequest applies one.
"""
from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

from ..errors import ProcessorError
from ..formats.tf_serving import PROMETHEUS_PATH, ModelConfig, SslConfig, read_model_server_config
from ..updater import PollingThread
from .registry import ModelRegistry

logger = logging.getLogger(__name__)


@dataclass
class ServerOptions:
    """What `serve` was asked for (the CLI's flags, TF Serving's names)."""
    models: List[ModelConfig]
    base: dict  # the Processor config every model's versions load with
    overrides: Dict[str, dict] = field(default_factory=dict)  # per model name, over `base`
    host: str = "127.0.0.1"
    port: int = 8500           # gRPC; 0: none
    rest_api_port: int = 8501  # REST; 0: none
    threads: int = 0           # request threads per API; 0: 2 per core
    grpc_threads: int = 0      # --grpc_max_threads; 0: `threads`, else 8
    rest_threads: int = 0      # --rest_api_num_threads; 0: `threads`
    rest_timeout_ms: int = 30000  # --rest_api_timeout_in_ms: a REST call that takes longer answers 504
    grpc_channel_arguments: List[Tuple[str, Union[int, str]]] = field(default_factory=list)
    ssl: Optional[SslConfig] = None  # --ssl_config_file: gRPC over TLS
    grpc_socket_path: str = ""  # --grpc_socket_path: gRPC on a UNIX socket too
    poll_seconds: float = 5.0  # --file_system_poll_wait_seconds
    model_config_file: Optional[str] = None
    model_config_file_poll_wait_seconds: float = 0.0
    metrics_path: Optional[str] = PROMETHEUS_PATH  # on the REST port (--monitoring_config_file); None: none


class ModelServer:
    """The registry and the servers over it."""

    def __init__(self, options: ServerOptions):
        self.options = options
        self.grpc = None
        if options.port:
            from .grpc_api import grpc_available
            missing = grpc_available()
            if missing:
                raise ProcessorError(f"--port {options.port}: {missing}; or give --port 0 to serve REST alone")
        self.registry = ModelRegistry(options.models, options.base, options.overrides, options.poll_seconds,
                                      publish=self._publish)
        self._config_text = None
        self._config_poller = None
        try:
            if options.port:
                from .grpc_api import GrpcApi
                self.grpc = GrpcApi(self.registry, self.reload)
                max_bytes = max([int(options.base.get("max_request_bytes", 64 << 20))] +
                                [int(o.get("max_request_bytes", 0)) for o in options.overrides.values()])
                self.grpc.start(f"{options.host}:{options.port}", options.grpc_threads or options.threads or 8,
                                max_bytes, options.grpc_channel_arguments, options.ssl, options.grpc_socket_path)
                logger.info("serving gRPC (tensorflow.serving.PredictionService, ModelService) on %s:%d%s%s",
                            options.host, self.grpc.port, " over TLS" if options.ssl else "",
                            f" and unix:{options.grpc_socket_path}" if options.grpc_socket_path else "")
            if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
                with open(options.model_config_file, encoding="utf-8") as f:
                    self._config_text = f.read()
                self._config_poller = PollingThread(options.model_config_file_poll_wait_seconds, self._poll_config,
                                                    name="processor-model-config")
                self._config_poller.start()
        except BaseException:
            self.close()
            raise

    def reload(self, models: List[ModelConfig]) -> List[str]:
        errors = self.registry.reload(models)
        for error in errors:
            logger.error("config reload: %s", error)
        return errors

    def close(self) -> None:
        if self._config_poller:
            self._config_poller.stop()
        if self.grpc is not None:
            self.grpc.stop()
        self.registry.close()

    def _publish(self, routes: dict) -> None:
        if self.grpc is not None:
            self.grpc.publish(routes)

    def _poll_config(self) -> None:
        path = self.options.model_config_file
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            logger.error("--model_config_file %s: %s", path, e.strerror)
            return
        if text == self._config_text:
            return
        try:
            models = read_model_server_config(path)
        except ProcessorError as e:
            logger.error("--model_config_file changed but is not applied: %s", e)
            self._config_text = text  # said once per change
            return
        self._config_text = text
        logger.info("--model_config_file changed: applying %d model(s)", len(models))
        self.reload(models)


def serve(options: ServerOptions) -> None:
    """Serves until SIGINT or SIGTERM."""
    server = ModelServer(options)
    if not options.rest_api_port:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            while not stop.wait(1.0):
                pass
        finally:
            server.close()
        return
    try:
        from aiohttp import web

        from ..hosts.rest import RestServer
    except ImportError as e:
        server.close()
        raise ProcessorError(f"the REST API needs the {e.name} package: pip install 'processor[rest]' "
                             "(or --rest_api_port 0 for gRPC alone)") from None
    max_bytes = int(options.base.get("max_request_bytes", 64 << 20))
    rest = RestServer(server.registry, options.rest_threads or options.threads, max_bytes, on_close=server.close,
                      metrics_path=options.metrics_path, timeout_ms=options.rest_timeout_ms)
    logger.info("serving REST on http://%s:%d/v1/models/{%s}", options.host, options.rest_api_port,
                ",".join(server.registry.names()))
    web.run_app(rest.app, host=options.host, port=options.rest_api_port, print=None, access_log=None)
