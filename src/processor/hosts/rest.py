"""An HTTP host compatible with TF Serving's REST API, on aiohttp.

    python -m processor serve --config cfg.json --model-name NAME --port 8501

Endpoints (as TF Serving's):
  POST /v1/models/NAME[/versions/V]:predict   row ("instances") or columnar ("inputs") format
  GET  /v1/models/NAME[/versions/V]           model_version_status
  GET  /v1/models/NAME[/versions/V]/metadata  the signature
  GET  /monitoring/prometheus/metrics         Prometheus text
Errors are {"error": "..."} with TF Serving's status codes: 400 for a bad request, 404 for an unknown
model or version, 503 when nothing serves, 500 otherwise.

The event loop only moves bytes: each predict (JSON decoding, the run, JSON encoding) goes to a thread
pool, and the run itself releases the GIL, so requests on several threads use several cores.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Tuple, Union

from aiohttp import web

from ..errors import RequestError
from ..facade import Processor
from .rest_json import RestRequestError, format_predict_response, parse_predict_body, signature_metadata

logger = logging.getLogger(__name__)

_MODEL_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?"
                         r"(?P<rest>/metadata|:[A-Za-z]+)?$")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def served_version(processor: Processor) -> int:
    """The version TF Serving's API shows: the checkpoint step, else the SavedModel's integer version
    (0 for an unversioned SavedModel without checkpoints)."""
    info = processor.model_info()
    if info.version_step >= 0:
        return info.version_step
    return max(info.savedmodel_version, 0)


class RestServer:
    """The aiohttp application over one Processor."""

    def __init__(self, processor: Processor, model_name: str, threads: int = 0):
        self.processor = processor
        self.model_name = model_name
        self._pool = ThreadPoolExecutor(max_workers=threads or (os.cpu_count() or 2) * 2,
                                        thread_name_prefix="processor-rest")
        self.app = web.Application(client_max_size=processor.config.max_request_bytes)
        self.app.router.add_route("*", "/v1/models/{tail:.*}", self._models)
        self.app.router.add_get("/monitoring/prometheus/metrics", self._metrics)
        self.app.on_cleanup.append(self._close)

    async def _models(self, request: web.Request) -> web.Response:
        match = _MODEL_PATH.match(request.path)
        if not match:
            return _error(404, f"Malformed request: {request.method} {request.path}")
        name, version, label, rest = match.group("name", "version", "label", "rest")
        rest = rest or ""
        if name != self.model_name:
            return _error(404, f"Servable not found for request: Latest({name})")
        if label is not None:
            return _error(404, f"Servable not found for request: Label({name}, {label}): version labels are "
                               f"not supported")
        if rest.startswith(":") and rest != ":predict":
            return _error(400, f"'{rest[1:]}' is not supported: this model serves predict")
        method = "POST" if rest == ":predict" else "GET"
        if request.method != method:
            return _error(405, f"{request.path} takes {method}")
        current = None
        if version is not None or rest != ":predict":  # a plain predict needs no look at the version
            try:
                current = await self._run(lambda: served_version(self.processor))
            except RequestError as e:
                return _error(e.code, e.message)
        if version is not None and int(version) != current:
            return _error(404, f"Servable not found for request: Specific({name}, {version}); serving version "
                               f"{current}")
        if rest == ":predict":
            return await self._predict(await request.read())
        if rest == "/metadata":
            signature = await self._run(self.processor.signature)
            return web.json_response({
                "model_spec": {"name": name, "signature_name": "", "version": str(current)},
                "metadata": {"signature_def": {"signature_def": signature_metadata(signature)}}})
        return web.json_response({"model_version_status": [{
            "version": str(current), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})

    async def _predict(self, body: bytes) -> web.Response:
        status, payload = await self._run(lambda: self._predict_in_thread(body))
        return web.Response(body=payload, status=status, content_type="application/json")

    def _predict_in_thread(self, body: bytes) -> Tuple[int, bytes]:
        try:
            try:
                document = json.loads(body)
            except (ValueError, UnicodeDecodeError) as e:
                raise RestRequestError(f"JSON Parse error: {e}") from None
            inputs, row_format, signature_name = parse_predict_body(document, self.processor.signature())
            outputs = self.processor.predict(inputs, signature_name=signature_name)
            return 200, json.dumps(format_predict_response(outputs, row_format)).encode()
        except RestRequestError as e:
            return 400, json.dumps({"error": str(e)}).encode()
        except RequestError as e:
            return e.code, json.dumps({"error": e.message}).encode()
        except Exception as e:  # noqa: BLE001 - a bug must still answer in the API's format
            logger.exception("predict failed")
            return 500, json.dumps({"error": f"internal error: {type(e).__name__}: {e}"}).encode()

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            text = await self._run(self.processor.metrics)
        except RequestError as e:
            return _error(e.code, e.message)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def _run(self, call) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def _close(self, app: web.Application) -> None:
        self._pool.shutdown(wait=True)
        self.processor.close()


def serve(config: Union[str, dict], model_name: Optional[str], host: str, port: int, threads: int = 0) -> None:
    """Loads the model and serves it until SIGINT or SIGTERM."""
    processor = Processor(config)
    name = model_name or processor.config.model_name
    server = RestServer(processor, name, threads)
    logger.info("serving model '%s' on http://%s:%d/v1/models/%s", name, host, port, name)
    web.run_app(server.app, host=host, port=port, print=None, access_log=None)
