"""TF Serving's gRPC API (tensorflow.serving.PredictionService, ModelService) over a ModelRegistry.

Predict is served in C++ (processor._grpc: cpp/grpc_server/tf_serving_server.cc) straight from the
routes the registry publishes, without Python. The other RPCs come here with their request's bytes and
are answered with tensorflow-serving-api's messages: GetModelMetadata, GetModelStatus,
HandleReloadConfigRequest, and Classify, Regress and MultiInference for signatures of that kind
(its tf.Examples serialized into the "inputs" tensor as TF Serving's InputToSerializedExampleTensor
does, the outputs read back as its classifier.cc and regressor.cc read them).
"""
from __future__ import annotations

import logging
from typing import Callable, List, Optional, Tuple

from google.protobuf.message import DecodeError

from ..errors import ProcessorError, RequestError
from . import example_apis
from .registry import ModelRegistry, served_version

logger = logging.getLogger(__name__)

# grpc::StatusCode
OK, INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, UNIMPLEMENTED, INTERNAL = 0, 3, 5, 9, 12, 13
_FROM_HTTP = {400: INVALID_ARGUMENT, 404: NOT_FOUND, 503: 14}

Answer = Tuple[int, str, bytes]


def grpc_available() -> Optional[str]:
    """None when processor._grpc is built; otherwise why not."""
    try:
        from .. import _grpc  # noqa: F401
    except ImportError as e:
        return f"the gRPC server is not built ({e}): apt-get install libgrpc++-dev and reinstall processor"
    return None


class GrpcApi:
    """The gRPC server of a registry. `reload(models)` applies a ModelServerConfig's models (the
    registry's reload, plus whatever the host keeps in step, such as the config file's poller)."""

    def __init__(self, registry: ModelRegistry, reload: Callable[[List], List[str]]):
        from .. import _core, _grpc
        self.registry = registry
        self._reload = reload
        self._server = _grpc.Server(_core.engine_functions(), self._control)
        self.port = 0

    def start(self, address: str, threads: int, max_message_bytes: int, channel_arguments=(), ssl=None,
              socket_path: str = "") -> int:
        """Listens on `address` (and the UNIX socket `socket_path`); `channel_arguments` are (key, value)
        pairs, `ssl` a formats.tf_serving.SslConfig. Returns the port."""
        ssl_tuple = None if ssl is None else (ssl.server_key, ssl.server_cert, ssl.custom_ca, ssl.client_verify)
        try:
            self.port = self._server.start(address, threads, max_message_bytes, list(channel_arguments), ssl_tuple,
                                           socket_path)
        except RuntimeError as e:  # the port is taken, or the address is not one
            raise ProcessorError(f"gRPC: {e}") from None
        self.publish(self.registry.routes())
        return self.port

    def publish(self, routes: dict) -> None:
        self._server.set_routes(routes)

    def stop(self, grace_seconds: float = 5.0) -> None:
        self._server.stop(grace_seconds)

    # ---- the RPCs Python answers

    def _control(self, method: str, request: bytes) -> Answer:
        name = method.rsplit("/", 1)[-1]
        handler = {"GetModelMetadata": self._get_model_metadata, "GetModelStatus": self._get_model_status,
                   "HandleReloadConfigRequest": self._reload_config,
                   "Classify": lambda r: self._examples_api(r, example_apis.CLASSIFY),
                   "Regress": lambda r: self._examples_api(r, example_apis.REGRESS),
                   "MultiInference": self._multi_inference}.get(name)
        if handler is None:
            return UNIMPLEMENTED, f"{name} is not served here", b""
        try:
            return handler(request)
        except DecodeError:
            return INVALID_ARGUMENT, "the request is not a valid protocol buffer", b""
        except example_apis.FailedPrecondition as e:
            return FAILED_PRECONDITION, e.message, b""
        except RequestError as e:
            return _FROM_HTTP.get(e.code, INTERNAL), e.message, b""
        except Exception as e:  # noqa: BLE001 - answered, logged, never raised into the server's thread
            logger.exception("%s failed", name)
            return INTERNAL, f"{name} failed: {type(e).__name__}: {e}", b""

    def _get_model_status(self, request: bytes) -> Answer:
        from tensorflow_serving.apis import get_model_status_pb2
        r = get_model_status_pb2.GetModelStatusRequest.FromString(request)
        version = r.model_spec.version.value if r.model_spec.HasField("version") else None
        if r.model_spec.version_label:
            _, version = self.registry.resolve(r.model_spec.name, label=r.model_spec.version_label)
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self.registry.status(r.model_spec.name, version):
            entry = response.model_version_status.add()
            entry.version = status.version
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
            if status.error:
                entry.status.error_code = 2  # UNKNOWN
                entry.status.error_message = status.error
        return OK, "", response.SerializeToString()

    def _get_model_metadata(self, request: bytes) -> Answer:
        # Its messages import TensorFlow's (SignatureDef): imported on the first call, not at start.
        from tensorflow_serving.apis import get_model_metadata_pb2
        r = get_model_metadata_pb2.GetModelMetadataRequest.FromString(request)
        if not r.metadata_field:
            return INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field", b""
        for field in r.metadata_field:
            if field != "signature_def":
                return INVALID_ARGUMENT, f"Metadata field {field} is not supported", b""
        spec = r.model_spec
        processor, served = self._resolve(spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = served
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in processor.signatures().items():
            _fill_signature_def(signatures.signature_def[name], signature)
        response.metadata["signature_def"].Pack(signatures)
        return OK, "", response.SerializeToString()

    def _examples_api(self, request: bytes, api: str) -> Answer:
        """Classify or Regress: a ClassificationRequest (RegressionRequest) answered with its response."""
        from tensorflow_serving.apis import classification_pb2, regression_pb2
        request_type, response_type = {
            example_apis.CLASSIFY: (classification_pb2.ClassificationRequest,
                                    classification_pb2.ClassificationResponse),
            example_apis.REGRESS: (regression_pb2.RegressionRequest, regression_pb2.RegressionResponse)}[api]
        r = request_type.FromString(request)

        def run(processor, version):
            signature = example_apis.check_signature(processor, r.model_spec.signature_name, api)
            response = response_type()
            _response_model_spec(response.model_spec, r.model_spec, version, signature["signature_name"])
            _example_result(api, response.result, processor, signature, _serialized_examples(r.input), version)
            return OK, "", response.SerializeToString()
        return self._on_one_version(r.model_spec, run)

    def _multi_inference(self, request: bytes) -> Answer:
        """TF Serving's MultiInference (multi_inference.cc): Classify and Regress tasks of one model on one
        input, each task answered as its own API answers it. Checked as TF Serving checks them; each task
        then runs its own signature (TF Serving fetches all tasks' outputs in one run)."""
        from tensorflow_serving.apis import inference_pb2, model_pb2
        r = inference_pb2.MultiInferenceRequest.FromString(request)
        return self._on_one_version(r.tasks[0].model_spec if r.tasks else model_pb2.ModelSpec(),
                                    lambda processor, version: self._infer(r, processor, version))

    def _infer(self, r, processor, version: int) -> Answer:
        from tensorflow_serving.apis import inference_pb2
        signatures = processor.signatures()
        main = next(iter(signatures))
        names, input_tensor, checked = set(), None, []
        for task in r.tasks:
            if not task.model_spec.name:
                raise RequestError(400, "Found ModelSpec with an empty model name.")
            if task.model_spec.name != r.tasks[0].model_spec.name:
                raise RequestError(400, "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
            name = task.model_spec.signature_name or main
            if name in names:
                raise RequestError(400, f"Duplicate evaluation of signature: {name}")
            names.add(name)
            if name not in signatures:
                raise RequestError(400, f"Requested signature not found in model graph: {name}")
            api = {"tensorflow/serving/classify": example_apis.CLASSIFY,
                   "tensorflow/serving/regress": example_apis.REGRESS}.get(task.method_name)
            if api is None:
                return UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}", b""
            signature = example_apis.check_signature(processor, name, api)
            if input_tensor is not None and signature["inputs"][0]["tensor_name"] != input_tensor:
                raise RequestError(400, "Input tensor must be the same for all Signatures.")
            input_tensor = signature["inputs"][0]["tensor_name"]
            checked.append((task, api, signature))
        examples = _serialized_examples(r.input)
        response = inference_pb2.MultiInferenceResponse()
        for task, api, signature in checked:
            result = response.results.add()
            _response_model_spec(result.model_spec, task.model_spec, version, task.model_spec.signature_name)
            out = result.classification_result if api == example_apis.CLASSIFY else result.regression_result
            _example_result(api, out, processor, signature, examples, version)
        return OK, "", response.SerializeToString()

    def _on_one_version(self, spec, run: Callable) -> Answer:
        """run(processor, version) for the version `spec` names, or the serving one, every run of it pinned
        to that version (the engine answers 404 when another serves by then). A model that swapped in
        between is asked again, unless the request named its version."""
        names_version = spec.HasField("version") or bool(spec.version_label)
        for attempt in range(3):
            processor, version = self._resolve(spec)
            try:
                return run(processor, version)
            except RequestError as e:
                if e.code != 404 or names_version or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _resolve(self, spec):
        """The Processor a ModelSpec names and the version it serves; 404 when the spec names (or labels)
        another version than that one."""
        processor, version = self.registry.resolve(
            spec.name, spec.version.value if spec.HasField("version") else None, spec.version_label or None)
        served = served_version(processor)
        if version is not None and version != served:
            raise RequestError(404, f"Servable not found for request: Specific({spec.name}, {version})")
        return processor, served

    def _reload_config(self, request: bytes) -> Answer:
        from tensorflow_serving.apis import model_management_pb2
        from ..formats.tf_serving import models_from_message
        r = model_management_pb2.ReloadConfigRequest.FromString(request)
        response = model_management_pb2.ReloadConfigResponse()
        try:
            errors = self._reload(models_from_message(r.config, "the ReloadConfigRequest"))
        except ProcessorError as e:
            errors = [str(e)]
        if errors:
            message = "; ".join(errors)
            response.status.error_code = INVALID_ARGUMENT
            response.status.error_message = message
            return INVALID_ARGUMENT, message, b""
        return OK, "", response.SerializeToString()


def _serialized_examples(input_message) -> List[bytes]:
    """TF Serving's InputToSerializedExampleTensor: each tf.Example serialized, after its context's bytes
    (a protobuf merge: the example's own features win) for example_list_with_context."""
    kind = input_message.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in input_message.example_list.examples]
    if kind == "example_list_with_context":
        context = input_message.example_list_with_context.context.SerializeToString()
        return [context + e.SerializeToString() for e in input_message.example_list_with_context.examples]
    return []


def _example_result(api: str, out, processor, signature, examples: List[bytes], version: int) -> None:
    """Runs `api` on the serialized examples and writes its ClassificationResult or RegressionResult
    into `out`: each example's classes (labels and scores, [N, K] each or one of them), or value."""
    if api == example_apis.REGRESS:
        for value in example_apis.regress(processor, signature, examples, version):
            out.regressions.add().value = float(value)
        return
    classes, scores = example_apis.classify(processor, signature, examples, version)
    shape = (classes if classes is not None else scores).shape
    for i in range(shape[0]):
        classifications = out.classifications.add()
        for c in range(shape[1]):
            entry = classifications.classes.add()
            if classes is not None:
                entry.label = classes[i, c]
            if scores is not None:
                entry.score = float(scores[i, c])


def _response_model_spec(out, spec, version: int, signature_name: str) -> None:
    """TF Serving's MakeModelSpec: the request's model name, the signature that ran, the version that
    answered."""
    out.name = spec.name
    out.signature_name = signature_name
    out.version.value = version


def _fill_signature_def(signature_def, signature: dict) -> None:
    """A SignatureDef from one of Processor.signatures(): the method, and each alias's tensor name, dtype, shape."""
    from tensorflow.core.framework import types_pb2
    signature_def.method_name = signature.get("method_name", "")
    for kind in ("inputs", "outputs"):
        infos = getattr(signature_def, kind)
        for entry in signature[kind]:
            info = infos[entry["alias"]]
            info.name = entry["tensor_name"]
            info.dtype = types_pb2.DataType.Value(entry["dtype"])
            if entry.get("unknown_rank"):
                info.tensor_shape.unknown_rank = True
            else:
                for size in entry["shape"]:
                    info.tensor_shape.dim.add().size = size
