"""An HTTP host compatible with TF Serving's REST API, on aiohttp, over the models of a ModelRegistry.

    python -m processor serve --config cfg.json --model-name NAME --rest_api_port 8501

Endpoints (as TF Serving's):
  POST /v1/models/NAME[/versions/V|/labels/L]:predict   row ("instances") or columnar ("inputs") format
  POST /v1/models/NAME[/versions/V|/labels/L]:classify  {"examples": [...], "context": {...}}; :regress too
  GET  /v1/models/NAME[/versions/V|/labels/L]           model_version_status
  GET  /v1/models/NAME[/versions/V|/labels/L]/metadata  the signature
  GET  /monitoring/prometheus/metrics                   Prometheus text of every model
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
from typing import Any, Optional, Tuple

from aiohttp import web

from ..errors import RequestError
from ..facade import Processor
from ..formats.tf_serving import PROMETHEUS_PATH
from ..server.registry import ModelRegistry, served_version
from .rest_json import (RestRequestError, format_classify_response, format_predict_response, parse_examples_body,
                        parse_predict_body, signature_metadata)

logger = logging.getLogger(__name__)

_MODEL_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?"
                         r"(?P<rest>/metadata|:[A-Za-z]+)?$")


def _json_answer(what: str, body: bytes, answer) -> Tuple[int, bytes]:
    """(status, JSON bytes) of a POST whose JSON `body` answer(document) turns into the answer's object;
    its errors in TF Serving's form, {"error": message}, with their codes."""
    try:
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise RestRequestError(f"JSON Parse error: {e}") from None
        return 200, json.dumps(answer(document)).encode()
    except RestRequestError as e:
        return 400, json.dumps({"error": str(e)}).encode()
    except RequestError as e:
        return e.code, json.dumps({"error": e.message}).encode()
    except Exception as e:  # noqa: BLE001 - a bug must still answer in the API's format
        logger.exception("%s failed", what)
        return 500, json.dumps({"error": f"internal error: {type(e).__name__}: {e}"}).encode()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class RestServer:
    """The aiohttp application over the models of a registry."""

    def __init__(self, registry: ModelRegistry, threads: int = 0, max_request_bytes: int = 64 << 20,
                 on_close=None, metrics_path: Optional[str] = PROMETHEUS_PATH, timeout_ms: int = 30000):
        self.registry = registry
        self._timeout_ms = timeout_ms  # --rest_api_timeout_in_ms: of a :predict, :classify or :regress; 0: none
        self._on_close = on_close  # called as the application closes (the server's shutdown)
        self._pool = ThreadPoolExecutor(max_workers=threads or (os.cpu_count() or 2) * 2,
                                        thread_name_prefix="processor-rest")
        self.app = web.Application(client_max_size=max_request_bytes)
        self.app.router.add_route("*", "/v1/models/{tail:.*}", self._models)
        if metrics_path:  # --monitoring_config_file may move it, or turn it off
            self.app.router.add_get(metrics_path, self._metrics)
        self.app.on_cleanup.append(self._close)

    async def _models(self, request: web.Request) -> web.Response:
        match = _MODEL_PATH.match(request.path)
        if not match:
            return _error(404, f"Malformed request: {request.method} {request.path}")
        name, version, label, rest = match.group("name", "version", "label", "rest")
        rest = rest or ""
        if rest.startswith(":") and rest not in (":predict", ":classify", ":regress"):
            return _error(400, f"'{rest[1:]}' is not supported: :predict, :classify and :regress are")
        method = "POST" if rest.startswith(":") else "GET"
        if request.method != method:
            return _error(405, f"{request.path} takes {method}")
        try:
            processor, wanted = self.registry.resolve(name, int(version) if version is not None else None, label)
        except RequestError as e:
            return _error(e.code, e.message)
        current = None
        if wanted is not None or not rest.startswith(":"):  # a plain call needs no look at the version
            try:
                current = await self._run(lambda: served_version(processor))
            except RequestError as e:
                return _error(e.code, e.message)
        if wanted is not None and wanted != current:
            return _error(404, f"Servable not found for request: Specific({name}, {wanted}); serving version "
                               f"{current}")
        # A request naming a version is answered by that version alone: the engine checks it again with
        # the run, since a model swapping in place may change version after the check above.
        if rest == ":predict":
            return await self._predict(processor, await request.read(), wanted)
        if rest in (":classify", ":regress"):
            body = await request.read()
            return await self._answer(lambda: self._examples_in_thread(processor, rest[1:], body, wanted))
        if rest == "/metadata":
            signatures = await self._run(processor.signatures)
            return web.json_response({
                "model_spec": {"name": name, "signature_name": "", "version": str(current)},
                "metadata": {"signature_def": {"signature_def": signature_metadata(signatures)}}})
        if version is None and label is None:  # every version of the model
            try:
                states = await self._run(lambda: self.registry.status(name))
            except RequestError as e:
                return _error(e.code, e.message)
            return web.json_response({"model_version_status": [{
                "version": str(s.version), "state": s.state,
                "status": {"error_code": "OK" if not s.error else "UNKNOWN", "error_message": s.error}}
                for s in states]})
        return web.json_response({"model_version_status": [{
            "version": str(current), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})

    async def _predict(self, processor: Processor, body: bytes, version: Optional[int]) -> web.Response:
        return await self._answer(lambda: self._predict_in_thread(processor, body, version))

    async def _answer(self, call) -> web.Response:
        """The (status, JSON bytes) `call` answers in a pool thread; 504 when it takes longer than the
        timeout (TF Serving's DEADLINE_EXCEEDED over REST). The call itself runs to its end."""
        running = asyncio.ensure_future(self._run(call))
        try:
            status, payload = await asyncio.wait_for(asyncio.shield(running),
                                                     self._timeout_ms / 1000 if self._timeout_ms > 0 else None)
        except asyncio.TimeoutError:
            return _error(504, f"Deadline exceeded: the request took longer than --rest_api_timeout_in_ms "
                               f"({self._timeout_ms} ms)")
        return web.Response(body=payload, status=status, content_type="application/json")

    @staticmethod
    def _predict_in_thread(processor: Processor, body: bytes, version: Optional[int]) -> Tuple[int, bytes]:
        def answer(document):
            inputs, row_format, signature_name = parse_predict_body(document, processor.signatures())
            outputs = processor.predict(inputs, signature_name=signature_name, version=version,
                                        strict_signature_name=True)
            return format_predict_response(outputs, row_format)
        return _json_answer("predict", body, answer)

    @staticmethod
    def _examples_in_thread(processor: Processor, api: str, body: bytes, version: Optional[int]) -> Tuple[int, bytes]:
        """:classify or :regress (processor/server/example_apis.py), as TF Serving's REST API answers them."""
        from ..server import example_apis

        def answer(document):
            serialized, signature_name = parse_examples_body(document)
            signature = example_apis.check_signature(processor, signature_name, api)
            if api == example_apis.CLASSIFY:
                return format_classify_response(*example_apis.classify(processor, signature, serialized, version))
            return {"results": [float(v) for v in example_apis.regress(processor, signature, serialized, version)]}
        return _json_answer(api, body, answer)

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            text = await self._run(self._all_metrics)
        except RequestError as e:
            return _error(e.code, e.message)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    def _all_metrics(self) -> str:
        texts = []
        for name in self.registry.names():
            try:
                processor, _ = self.registry.resolve(name)
            except RequestError:
                continue  # no version loaded
            texts.append(processor.metrics())
        return merge_metrics(texts)

    async def _run(self, call) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def _close(self, app: web.Application) -> None:
        self._pool.shutdown(wait=True)
        if self._on_close is not None:
            self._on_close()


def merge_metrics(texts) -> str:
    """Prometheus texts of several models as one exposition: each family's HELP and TYPE once, then
    every model's samples of it (a family may not be split or repeated in one exposition)."""
    families = {}  # name -> [help and type lines, samples], in the order first seen
    for text in texts:
        family = None
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                family = families.setdefault(line.split()[2], [[], []])
                if line not in family[0]:
                    family[0].append(line)
            elif line.strip():
                if family is None:
                    family = families.setdefault("", [[], []])
                family[1].append(line)
    return "".join(line + "\n" for header, samples in families.values() for line in header + samples)
