"""`python -m processor serve` as a TF Serving drop-in: TF Serving's own client library
(tensorflow-serving-api's prediction_service_pb2_grpc and model_service_pb2_grpc over grpcio), its
documented configs (tensorflow_serving/g3doc/serving_config.md: several models; specific versions with
labels "stable" and "canary"), its flags, and SavedModels written by TF1 builders in its numbered
layout. Each version answers with its own tag, so a test sees which version answered."""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from model_builders import build_counting_model, build_keras_export, build_lookup_model
from test_rest_server import Server

tf = pytest.importorskip("tensorflow")
grpc = pytest.importorskip("grpc")
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_management_pb2,  # noqa: E402
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)
from google.protobuf import text_format  # noqa: E402

from processor.server.grpc_api import grpc_available  # noqa: E402

if grpc_available():
    pytest.skip(grpc_available(), allow_module_level=True)

IDS = np.array([0, 3, 7])


def tag(version: int) -> int:
    return 10 * version


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """counter: versions 1..3 (a TF1 while loop answering its tag); lookup: versions 1 and 2 (a gather),
    with TensorFlow's own rows for IDS."""
    root = tmp_path_factory.mktemp("tfs_models")
    for version in (1, 2, 3):
        build_counting_model(str(root / "counter" / str(version)), tag(version))
    rows = {version: build_lookup_model(str(root / "lookup" / str(version)), rows=10, dim=4, seed=version,
                                        sample_ids=IDS) for version in (1, 2)}
    return root, rows


def model_config(root: Path, body: str = "") -> str:
    """TF Serving's multi-model example, with `body` added to the counter's config."""
    return (f"model_config_list {{\n"
            f"  config {{ name: 'counter' base_path: '{root / 'counter'}' model_platform: 'tensorflow'\n{body} }}\n"
            f"  config {{ name: 'lookup' base_path: '{root / 'lookup'}' model_platform: 'tensorflow' }}\n}}\n")


CANARY = """model_version_policy { specific { versions: 1 versions: 2 } }
version_labels { key: 'stable' value: 1 }
version_labels { key: 'canary' value: 2 }
"""


class Client:
    """TF Serving's Python client stubs on one channel."""

    def __init__(self, port: int):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def predict(self, name: str, inputs: dict, version=None, label=None, signature_name=""):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        if label is not None:
            request.model_spec.version_label = label
        if signature_name:
            request.model_spec.signature_name = signature_name
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
        return self.predictions.Predict(request, timeout=30)

    def count(self, version=None, label=None, name="counter"):
        """(tag, version) the counter answers with."""
        response = self.predict(name, {"n": np.int64(3)}, version, label)
        assert tf.make_ndarray(response.outputs["count"]) == 3
        return int(tf.make_ndarray(response.outputs["tag"])), response.model_spec.version.value

    def status(self, name: str, version=None):
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        return self.models.GetModelStatus(request, timeout=30)

    def reload(self, text: str):
        request = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(text, request.config)
        return self.models.HandleReloadConfigRequest(request, timeout=300)

    def close(self):
        self.channel.close()


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def start(work: Path, config_text: str, *flags) -> Server:
    config_file = work / "models.config"
    config_file.write_text(config_text)
    return Server(None, work, "counter", ("--model_config_file", str(config_file), *flags), grpc=True)


@pytest.fixture(scope="module")
def canary(models, tmp_path_factory):
    """TF Serving's two documented examples in one config: two models, the counter's versions 1 and 2
    kept side by side with labels."""
    root, _ = models
    server = start(tmp_path_factory.mktemp("canary"), model_config(root, CANARY))
    client = Client(server.grpc_port)
    yield server, client
    client.close()
    assert server.stop() == 0


def test_several_models_answer_over_grpc_as_tensorflow(models, canary):
    _, rows = models
    _, client = canary
    response = client.predict("lookup", {"ids": IDS})
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["rows"]), rows[2], atol=1e-6)
    assert (response.model_spec.name, response.model_spec.version.value) == ("lookup", 2)
    assert response.model_spec.signature_name == "serving_default"
    assert client.count() == (tag(2), 2)  # the newest version the policy keeps, not 3


def test_versions_and_labels_route_to_the_version_they_name(canary):
    server, client = canary
    assert client.count(version=1) == (tag(1), 1)
    assert client.count(version=2) == (tag(2), 2)
    assert client.count(label="stable") == (tag(1), 1)
    assert client.count(label="canary") == (tag(2), 2)
    # REST routes the same way
    for path, expected in (("/labels/stable", tag(1)), ("/labels/canary", tag(2)), ("/versions/1", tag(1)), ("", tag(2))):
        answer = server.predict({"inputs": {"n": 2}}, path)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"]["tag"] == expected, path


@pytest.mark.parametrize("call, code, message", [
    (lambda c: c.count(version=3), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(counter, 3)"),
    (lambda c: c.count(label="beta"), grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: beta"),
    (lambda c: c.count(name="nope"), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
    (lambda c: c.count(name="nope", version=1), grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Specific(nope, 1)"),
    (lambda c: c.predict("counter", {"n": np.int64(1)}, signature_name="classify"), grpc.StatusCode.FAILED_PRECONDITION,
     'Serving signature key "classify" not found.'),
    (lambda c: c.predict("counter", {"n": np.float32(1)}), grpc.StatusCode.INVALID_ARGUMENT,
     "input 'n': dtype DT_FLOAT does not match the signature's DT_INT64"),
    (lambda c: c.predict("counter", {"m": np.int64(1)}), grpc.StatusCode.INVALID_ARGUMENT,
     "input tensor alias not found in signature: m. Inputs expected to be in the set {n}."),
    (lambda c: c.status("nope"), grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope"),
    (lambda c: c.status("counter", 3), grpc.StatusCode.NOT_FOUND, "Could not find version 3 of model counter"),
])
def test_errors_have_tf_servings_codes_and_messages(canary, call, code, message):
    _, client = canary
    error = rpc_error(lambda: call(client))
    assert (error.code(), error.details()) == (code, message)
    assert client.count() == (tag(2), 2)  # still serving


def test_malformed_bytes_and_unserved_methods(canary):
    server, client = canary
    raw = client.channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    error = rpc_error(lambda: raw(b"\x0a\xff\xff", timeout=10))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid protocol buffer")
    multi = client.channel.unary_unary("/tensorflow.serving.PredictionService/MultiInference")
    error = rpc_error(lambda: multi(b"", timeout=10))  # no task: no model named
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest()")
    error = rpc_error(lambda: multi(b"\x0a\xff\xff", timeout=10))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid protocol buffer")
    unknown = client.channel.unary_unary("/tensorflow.serving.PredictionService/Explain")
    assert rpc_error(lambda: unknown(b"", timeout=10)).code() == grpc.StatusCode.UNIMPLEMENTED
    assert client.count() == (tag(2), 2)


def test_model_status_lists_the_versions_kept(canary):
    _, client = canary
    status = client.status("counter")
    assert [(s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state)) for s in
            status.model_version_status] == [(1, "AVAILABLE"), (2, "AVAILABLE")]
    assert [s.version for s in client.status("lookup").model_version_status] == [2]
    assert [s.version for s in client.status("counter", 1).model_version_status] == [1]


def test_model_metadata_is_the_saved_models_signature_def(models, canary):
    root, _ = models
    _, client = canary
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "lookup"
    request.metadata_field.append("signature_def")
    response = client.predictions.GetModelMetadata(request, timeout=60)
    assert (response.model_spec.name, response.model_spec.version.value) == ("lookup", 2)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    from tensorflow.core.protobuf import saved_model_pb2
    saved = saved_model_pb2.SavedModel.FromString((root / "lookup" / "2" / "saved_model.pb").read_bytes())
    expected = saved.meta_graphs[0].signature_def["serving_default"]
    assert signatures.signature_def["serving_default"] == expected  # the whole SignatureDef, as TF wrote it
    request.metadata_field[0] = "graph"
    error = rpc_error(lambda: client.predictions.GetModelMetadata(request, timeout=60))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Metadata field graph is not supported")


def test_reload_adds_removes_and_relabels_without_touching_the_others(models, tmp_path):
    """HandleReloadConfigRequest: the counter's label moves and the lookup model goes and comes back,
    while a client keeps asking the counter: every one of its requests is answered by the version it
    names, and none fails."""
    root, rows = models
    server = start(tmp_path, model_config(root, CANARY))
    client = Client(server.grpc_port)
    failures, answered, stop = [], [], threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                answered.append(client.count(label="stable"))
            except grpc.RpcError as e:
                failures.append(f"{e.code()}: {e.details()}")

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        only_counter = f"model_config_list {{ config {{ name: 'counter' base_path: '{root / 'counter'}' {CANARY} }} }}"
        assert client.reload(only_counter).status.error_code == 0
        error = rpc_error(lambda: client.predict("lookup", {"ids": IDS}))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        relabelled = model_config(root, CANARY.replace("key: 'canary' value: 2", "key: 'canary' value: 1"))
        assert client.reload(relabelled).status.error_code == 0
        assert client.count(label="canary") == (tag(1), 1)
        np.testing.assert_allclose(tf.make_ndarray(client.predict("lookup", {"ids": IDS}).outputs["rows"]),
                                   rows[2], atol=1e-6)
        bad = model_config(root).replace(str(root / "lookup"), str(root / "missing"))
        error = rpc_error(lambda: client.reload(bad.replace("config { name: 'counter'", "config { name: 'counter2'")))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "model 'lookup'" in error.details()
    finally:
        stop.set()
        thread.join()
        client.close()
        assert server.stop() == 0
    assert failures == []
    assert len(answered) > 10 and set(answered) == {(tag(1), 1)}


def test_new_versions_are_served_and_old_ones_retired_by_the_policy(models, tmp_path):
    """`latest { num_versions: 2 }`: versions arriving under the base path (copied in, in any order of
    files, then complete) are served within a poll; the oldest beyond two is unloaded, while a client
    keeps asking for the newest."""
    root, _ = models
    base = tmp_path / "counter"
    for version in (1, 2):
        shutil.copytree(root / "counter" / str(version), base / str(version))
    config = (f"model_config_list {{ config {{ name: 'counter' base_path: '{base}' "
              f"model_version_policy {{ latest {{ num_versions: 2 }} }} }} }}")
    server = start(tmp_path, config, "--file_system_poll_wait_seconds", "0.2")
    client = Client(server.grpc_port)
    answers, stop = [], threading.Event()

    def ask_for_version_1():  # while it is retired: its own answer, or NOT_FOUND once it is gone
        while not stop.is_set():
            try:
                answers.append(client.count(version=1))
            except grpc.RpcError as e:
                answers.append((e.code(), e.details()))

    asking = threading.Thread(target=ask_for_version_1)
    try:
        assert [s.version for s in client.status("counter").model_version_status] == [1, 2]
        asking.start()
        arriving = base / "3"
        arriving.mkdir()  # the directory first, its graph last: incomplete until then
        time.sleep(0.6)
        assert client.count() == (tag(2), 2)
        shutil.copy(root / "counter" / "3" / "saved_model.pb", arriving / "saved_model.pb")
        deadline = time.monotonic() + 30
        while client.count()[1] != 3:
            assert time.monotonic() < deadline, "version 3 was not served"
            time.sleep(0.1)
        while [s.version for s in client.status("counter").model_version_status] != [2, 3]:
            assert time.monotonic() < deadline, "version 1 was not retired"
            time.sleep(0.1)
        assert client.count(version=2) == (tag(2), 2)
        error = rpc_error(lambda: client.count(version=1))
        assert error.details() == "Servable not found for request: Specific(counter, 1)"
    finally:
        stop.set()
        if asking.is_alive():
            asking.join()
        client.close()
        assert server.stop() == 0
    gone = (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(counter, 1)")
    assert set(answers) == {(tag(1), 1), gone}
    first_gone = answers.index(gone)
    assert set(answers[first_gone:]) == {gone}  # once retired, never answered again


def test_the_model_config_file_is_read_again_when_it_changes(models, tmp_path):
    """And labels on a model that swaps its newest version in place: a label naming another version than
    the one serving is not answered by the one serving."""
    root, rows = models
    only_counter = (f"model_config_list {{ config {{ name: 'counter' base_path: '{root / 'counter'}'\n"
                    f"version_labels {{ key: 'now' value: 3 }} version_labels {{ key: 'old' value: 1 }} }} }}")
    server = start(tmp_path, only_counter, "--model_config_file_poll_wait_seconds", "0.2")
    client = Client(server.grpc_port)
    try:
        assert client.count() == (tag(3), 3)
        assert client.count(label="now") == (tag(3), 3)
        error = rpc_error(lambda: client.count(label="old"))
        assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND,
                                                   "Servable not found for request: Specific(counter, 1)")
        assert server.predict({"inputs": {"n": 1}}, "/labels/old").status_code == 404
        (tmp_path / "models.config").write_text(model_config(root))
        deadline = time.monotonic() + 60
        while True:
            try:
                response = client.predict("lookup", {"ids": IDS})
                break
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND and time.monotonic() < deadline, e.details()
                time.sleep(0.1)
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["rows"]), rows[2], atol=1e-6)
        status = requests.get(f"{server.url}/v1/models/lookup", timeout=30).json()
        assert [v["version"] for v in status["model_version_status"]] == ["2"]
    finally:
        client.close()
        assert server.stop() == 0


def test_a_real_model_over_grpc_answers_as_tensorflow(rec_model, reference, batch, tmp_path):
    """With TF Serving's --monitoring_config_file moving the metrics to another path."""
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true, path: '/metrics' }")
    server = Server(rec_model.config(poll_interval_seconds=0), tmp_path, grpc=True,
                    flags=("--monitoring_config_file", str(monitoring)))
    client = Client(server.grpc_port)
    try:
        response = client.predict("rec", batch)
        expected = reference.predict(rec_model.prefixes()[-1], batch)
        for name, value in expected.items():
            np.testing.assert_allclose(tf.make_ndarray(response.outputs[name]), value, rtol=1e-6, atol=1e-6)
        metrics = requests.get(f"{server.url}/metrics", timeout=30)
        assert ':tensorflow:serving:request_count{model_name="rec",status="OK"} 1' in metrics.text
        assert requests.get(f"{server.url}/monitoring/prometheus/metrics", timeout=30).status_code == 404
    finally:
        client.close()
        assert server.stop() == 0


def test_a_grpc_port_in_use_is_an_error_not_a_shared_port(models):
    """gRPC's default SO_REUSEPORT would let a second server take half of another's connections
    silently; the server refuses the port instead (and would serve on, past the timeout, if it shared)."""
    import socket
    import subprocess
    import sys
    root, _ = models
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as another gRPC server holds it
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        done = subprocess.run([sys.executable, "-m", "processor", "serve", "--model_name", "counter",
                               "--model_base_path", str(root / "counter"), "--port", str(port), "--rest_api_port", "0"],
                              capture_output=True, text=True, timeout=120)
    finally:
        holder.close()
    assert done.returncode == 1
    assert f"error: gRPC: cannot listen on 127.0.0.1:{port} (is the port in use?)" in done.stderr


def build_example_model(path: str) -> None:
    """An Estimator-style export (TF1 builder): serialized tf.Examples in, a "serving_default"
    classification signature (classes, scores) and a "regress" regression signature."""
    tf1 = tf.compat.v1
    with tf.Graph().as_default() as graph:
        serialized = tf1.placeholder(tf.string, [None], name="input_example_tensor")
        features = tf1.io.parse_example(serialized, {
            "x": tf1.io.FixedLenFeature([2], tf.float32),
            "bias": tf1.io.FixedLenFeature([1], tf.float32, default_value=[0.0])})
        logits = tf.matmul(features["x"], tf.constant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])) + features["bias"]
        scores = tf.nn.softmax(logits)
        classes = tf.tile(tf.constant([["cars", "books", "games"]]), [tf.shape(serialized)[0], 1])
        value = tf.reduce_sum(logits, axis=1, keepdims=True)
        with tf1.Session(graph=graph) as session:
            builder = tf1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
                "serving_default": tf1.saved_model.classification_signature_def(serialized, classes, scores),
                "regress": tf1.saved_model.regression_signature_def(serialized, value)})
            builder.save()


def example(x=None, bias=None):
    e = tf.train.Example()
    if x is not None:
        e.features.feature["x"].float_list.value.extend(x)
    if bias is not None:
        e.features.feature["bias"].float_list.value.append(bias)
    return e


def tensorflow_answers(path: str, serialized: list, signature_name: str) -> dict:
    tf1 = tf.compat.v1
    with tf.Graph().as_default() as graph, tf1.Session(graph=graph) as session:
        signature = tf1.saved_model.loader.load(session, ["serve"], path).signature_def[signature_name]
        return session.run({k: v.name for k, v in signature.outputs.items()},
                           {signature.inputs["inputs"].name: serialized})


def test_classify_and_regress_answer_as_tensorflow(tmp_path):
    """Classify and Regress on an Estimator-style export with both signatures: two models of one base
    path, the second serving "regress" through --config's per-model settings; example lists with and
    without a context, compared with TensorFlow's outputs for the same serialized examples."""
    from tensorflow_serving.apis import classification_pb2, regression_pb2
    base = tmp_path / "examples_model"
    build_example_model(str(base / "1"))
    (tmp_path / "models.config").write_text(
        f"model_config_list {{ config {{ name: 'classifier' base_path: '{base}' }}\n"
        f"config {{ name: 'regressor' base_path: '{base}' }} }}")
    (tmp_path / "settings.json").write_text('{"models": {"regressor": {"signature_name": "regress"}}}')
    server = Server(None, tmp_path, "classifier", ("--model_config_file", str(tmp_path / "models.config"),
                                                   "--config", str(tmp_path / "settings.json")), grpc=True)
    client = Client(server.grpc_port)
    examples = [example([1.0, 2.0]), example([0.5, -1.0], bias=3.0), example([0.0, 0.0])]
    context = example(bias=-1.0)
    try:
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "classifier"
        request.input.example_list.examples.extend(examples)
        response = client.predictions.Classify(request, timeout=30)
        expected = tensorflow_answers(str(base / "1"), [e.SerializeToString() for e in examples], "serving_default")
        assert (response.model_spec.name, response.model_spec.version.value,
                response.model_spec.signature_name) == ("classifier", 1, "serving_default")
        assert len(response.result.classifications) == 3
        for i, classifications in enumerate(response.result.classifications):
            assert [c.label for c in classifications.classes] == ["cars", "books", "games"]
            np.testing.assert_allclose([c.score for c in classifications.classes], expected["scores"][i], rtol=1e-6)

        request = regression_pb2.RegressionRequest()
        request.model_spec.name = "regressor"
        request.input.example_list_with_context.context.CopyFrom(context)
        request.input.example_list_with_context.examples.extend(examples)
        response = client.predictions.Regress(request, timeout=30)
        merged = [context.SerializeToString() + e.SerializeToString() for e in examples]  # the example's bias wins
        expected = tensorflow_answers(str(base / "1"), merged, "regress")["outputs"].reshape(-1)
        np.testing.assert_allclose([r.value for r in response.result.regressions], expected, rtol=1e-6)
        assert expected[0] == pytest.approx(1 + 8 + 2 + 10 + 3 + 12 - 3)  # the context's bias -1, on 3 logits

        request.model_spec.name = "classifier"  # its main signature is "serving_default", which classifies...
        request.model_spec.signature_name = "regress"  # ...and a request may name its other one
        response = client.predictions.Regress(request, timeout=30)
        np.testing.assert_allclose([r.value for r in response.result.regressions], expected, rtol=1e-6)
        assert response.model_spec.signature_name == "regress"
        request.model_spec.signature_name = ""
        error = rpc_error(lambda: client.predictions.Regress(request, timeout=30))
        assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                   "Expected regression signature method_name to be "
                                                   "tensorflow/serving/regress. Was: tensorflow/serving/classify")
        empty = classification_pb2.ClassificationRequest()
        empty.model_spec.name = "classifier"
        error = rpc_error(lambda: client.predictions.Classify(empty, timeout=30))
        assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
        # REST, with TF Serving's JSON examples: the same answers
        rest_examples = [{"x": [1.0, 2.0]}, {"x": [0.5, -1.0], "bias": 3.0}, {"x": [0.0, 0.0]}]
        answer = requests.post(f"{server.url}/v1/models/classifier:classify", json={"examples": rest_examples}, timeout=30)
        assert answer.status_code == 200, answer.text
        expected = tensorflow_answers(str(base / "1"), [e.SerializeToString() for e in examples], "serving_default")
        for i, row in enumerate(answer.json()["results"]):
            assert [label for label, _ in row] == ["cars", "books", "games"]
            np.testing.assert_allclose([score for _, score in row], expected["scores"][i], rtol=1e-6)
        answer = requests.post(f"{server.url}/v1/models/regressor/versions/1:regress",
                               json={"context": {"bias": -1.0}, "examples": [{"x": [1.0, 2.0]}]}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"results": [pytest.approx(33.0)]}
        for body, message in (({"examples": [{"x": [1.0, "a"]}]}, "examples[0] feature 'x': values must be all numbers"),
                              ({"context": {"bias": 1.0}, "examples": [{"bias": 2.0}]}, "also in 'context'"),
                              ({"examples": []}, "Input is empty."),
                              # integers are int64_list, as in TF Serving: a float feature needs 0.0
                              ({"examples": [{"x": [0, 0]}]}, "Data types don't match")):
            answer = requests.post(f"{server.url}/v1/models/classifier:classify", json=body, timeout=30)
            assert answer.status_code == 400 and message in answer.json()["error"], answer.text
        # Predict reaches the same signature with the examples as a string tensor
        answer = client.predict("classifier", {"inputs": np.array([e.SerializeToString() for e in examples],
                                                                  dtype=object)})
        np.testing.assert_allclose(tf.make_ndarray(answer.outputs["scores"]),
                                   tensorflow_answers(str(base / "1"), [e.SerializeToString() for e in examples],
                                                      "serving_default")["scores"], rtol=1e-6)
        check_multi_inference(client, str(base / "1"), examples)
    finally:
        client.close()
        assert server.stop() == 0


def check_multi_inference(client, path: str, examples: list) -> None:
    """MultiInference: a classify and a regress task of one model on one input, each answered as its
    own API answers (TensorFlow's outputs); then TF Serving's checks, with its codes and messages."""
    from tensorflow_serving.apis import inference_pb2
    serialized = [e.SerializeToString() for e in examples]
    request = inference_pb2.MultiInferenceRequest()
    request.input.example_list.examples.extend(examples)
    for signature, method in (("", "tensorflow/serving/classify"), ("regress", "tensorflow/serving/regress")):
        task = request.tasks.add(method_name=method)
        task.model_spec.name = "classifier"
        task.model_spec.signature_name = signature
    response = client.predictions.MultiInference(request, timeout=30)
    classified, regressed = response.results
    assert (classified.model_spec.name, classified.model_spec.version.value,
            regressed.model_spec.signature_name) == ("classifier", 1, "regress")
    scores = tensorflow_answers(path, serialized, "serving_default")["scores"]
    for i, classifications in enumerate(classified.classification_result.classifications):
        assert [c.label for c in classifications.classes] == ["cars", "books", "games"]
        np.testing.assert_allclose([c.score for c in classifications.classes], scores[i], rtol=1e-6)
    np.testing.assert_allclose([r.value for r in regressed.regression_result.regressions],
                               tensorflow_answers(path, serialized, "regress")["outputs"].reshape(-1), rtol=1e-6)

    def refused(change):
        wrong = inference_pb2.MultiInferenceRequest()
        wrong.CopyFrom(request)
        change(wrong)
        error = rpc_error(lambda: client.predictions.MultiInference(wrong, timeout=30))
        return error.code(), error.details()
    assert refused(lambda r: setattr(r.tasks[1].model_spec, "signature_name", "serving_default")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Duplicate evaluation of signature: serving_default")
    assert refused(lambda r: setattr(r.tasks[1].model_spec, "signature_name", "nope")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Requested signature not found in model graph: nope")
    assert refused(lambda r: setattr(r.tasks[1].model_spec, "name", "regressor")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
    assert refused(lambda r: setattr(r.tasks[1], "method_name", "tensorflow/serving/predict")) == (
        grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict")
    assert refused(lambda r: setattr(r.tasks[1], "method_name", "tensorflow/serving/classify")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Expected classification signature method_name to be "
                                          "tensorflow/serving/classify. Was: tensorflow/serving/regress")


def test_a_version_that_fails_to_load_is_retried_until_repaired(models, tmp_path):
    """`all` versions: version 2 arrives with a corrupt graph, is reported END with its error, and once its
    graph is repaired in place (the same version number) it is served without a restart."""
    root, _ = models
    base = tmp_path / "counter"
    shutil.copytree(root / "counter" / "1", base / "1")
    config = (f"model_config_list {{ config {{ name: 'counter' base_path: '{base}' "
              f"model_version_policy {{ all {{}} }} }} }}")
    server = start(tmp_path, config, "--file_system_poll_wait_seconds", "0.2")
    client = Client(server.grpc_port)
    try:
        (base / "2").mkdir()
        (base / "2" / "saved_model.pb").write_bytes(b"\x0a\xff\xff not a SavedModel")
        deadline = time.monotonic() + 30
        while True:
            states = {s.version: s for s in client.status("counter").model_version_status}
            if 2 in states:
                break
            assert time.monotonic() < deadline, "the broken version was not reported"
            time.sleep(0.1)
        assert get_model_status_pb2.ModelVersionStatus.State.Name(states[2].state) == "END"
        assert states[2].status.error_code == 2 and states[2].status.error_message
        assert client.count() == (tag(1), 1)  # the newest version that loads serves
        shutil.copy(root / "counter" / "2" / "saved_model.pb", base / "2" / "saved_model.pb")
        while client.count()[1] != 2:
            assert time.monotonic() < deadline + 30, "the repaired version was not served"
            time.sleep(0.2)
        assert [s.version for s in client.status("counter").model_version_status] == [1, 2]
    finally:
        client.close()
        assert server.stop() == 0


def test_every_signature_of_a_keras_export_is_served_over_grpc_and_rest(tmp_path):
    """A Keras 3 export with three signatures, served by TF Serving's flags: GetModelMetadata lists
    each SignatureDef as the SavedModel holds it, and Predict over gRPC and REST answers whichever a
    request names as TensorFlow does."""
    from tensorflow.core.protobuf import saved_model_pb2
    base = tmp_path / "keras"
    expected = build_keras_export(str(base / "1"))
    server = Server(None, tmp_path, "keras", ("--model_name", "keras", "--model_base_path", str(base)), grpc=True)
    client = Client(server.grpc_port)
    try:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = "keras"
        signatures = get_model_metadata_pb2.SignatureDefMap()
        client.predictions.GetModelMetadata(request, timeout=60).metadata["signature_def"].Unpack(signatures)
        saved = saved_model_pb2.SavedModel.FromString((base / "1" / "saved_model.pb").read_bytes())
        saved_signatures = dict(saved.meta_graphs[0].signature_def)
        del saved_signatures["__saved_model_init_op"]  # the loader's, which no request may run
        assert dict(signatures.signature_def) == saved_signatures

        response = client.predict("keras", {"ids": expected["ids"]}, signature_name="embed")
        assert response.model_spec.signature_name == "embed"
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["rows"]), expected["embed/rows"], rtol=1e-6)
        response = client.predict("keras", {"ids": expected["ids"], "dense": expected["dense"]}, signature_name="serve")
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["score"]), expected["serve/score"], rtol=1e-6)

        answer = server.predict({"signature_name": "embed", "instances": expected["ids"].tolist()})
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json()["predictions"], expected["embed/rows"], rtol=1e-6)
        answer = server.predict({"signature_name": "nope", "instances": [1]})
        assert (answer.status_code, answer.json()) == (400, {"error": 'Serving signature key "nope" not found.'})
        metadata = requests.get(f"{server.url}/v1/models/keras/metadata", timeout=30).json()
        assert sorted(metadata["metadata"]["signature_def"]["signature_def"]) == ["embed", "serve", "serving_default"]
    finally:
        client.close()
        assert server.stop() == 0
