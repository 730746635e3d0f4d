"""Requests reach TensorFlow through its callable interface (Session::RunCallable), one callable per
serving pool and signature, the main signature's made at load and the others' on their first requests;
what no callable covers (an output_filter, a traced step, a signature
TensorFlow makes no callable for) goes through TF_SessionRun. Both give TensorFlow's answers."""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import processor
import recommendation_model
from lifecycle_helpers import serialize
from model_builders import build_fed_and_fetched_model
from processor import predict_pb2, tensors
from processor.config import parse_config
from processor.loading import control

TOLERANCE = 1e-5


def load(savedmodel_dir: str, prefix: str | None = None, **settings):
    config = parse_config({"savedmodel_dir": savedmodel_dir, **settings})
    return control.plan_load(control.load_request(config, savedmodel_dir, prefix)).load()


def serve(servable, batch: dict, output_filter=(), signature_name: str = "") -> tuple[int, dict | str]:
    request = predict_pb2.PredictRequest.FromString(serialize(batch))
    request.signature_name = signature_name
    request.output_filter.extend(output_filter)
    code, body = servable.process(request.SerializeToString())
    if code != 200:
        return code, body.decode()
    response = predict_pb2.PredictResponse.FromString(body)
    return code, {name: tensors.from_array_proto(array) for name, array in response.outputs.items()}


def assert_matches(outputs: dict, expected: dict):
    assert sorted(outputs) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name], value, rtol=TOLERANCE, atol=TOLERANCE, err_msg=name)


@pytest.mark.parametrize("settings", [{}, {"enable_inline_execute": True},
                                      {"session_num": 2, "select_session_policy": "RR"},
                                      {"session_num": 3, "select_session_policy": "MOD"}],
                         ids=["defaults", "inline", "two pools RR", "three pools MOD"])
def test_whole_signature_runs_through_a_callable_and_answers_as_tensorflow(rec_model, reference, settings):
    prefix = rec_model.prefixes()[-1]
    servable = load(rec_model.savedmodel_dir, prefix, **settings)
    assert servable.run_interface == ("callable", "")
    rng = np.random.default_rng(7)
    # Batches of changing sizes, so that round robin visits every pool's callable and a thread's kept
    # input tensors are written again with other values, then replaced by other shapes.
    for size in (6, 6, 6, 3, 1, 3):
        batch = recommendation_model.random_batch(size, rng)
        code, outputs = serve(servable, batch)
        assert code == 200, outputs
        assert_matches(outputs, reference.predict(prefix, batch))
        # An output_filter fetches fewer tensors than the callable: TF_SessionRun runs it.
        code, filtered = serve(servable, batch, ["logits", "prob"])
        assert code == 200, filtered
        assert_matches(filtered, reference.predict(prefix, batch, ["logits", "prob"]))


def test_tensorflows_errors_come_back_from_the_callable_as_from_session_run(rec_model, batch):
    servable = load(rec_model.savedmodel_dir, rec_model.prefixes()[-1])
    bad = {**batch, "item_id": batch["item_id"][:3]}  # each input fits the signature, but not the others
    code, message = serve(servable, bad)
    assert code == 400
    assert message.startswith("running the model: ConcatOp : Dimension 0 in both shapes must be equal")
    assert serve(servable, batch)[0] == 200  # the thread's next request: its status was reset
    assert serve(servable, bad, ["prob"]) == (code, message)


def test_without_a_callable_requests_go_through_session_run_and_the_load_says_why(tmp_path, caplog):
    path = build_fed_and_fetched_model(str(tmp_path / "saved_model"))
    servable = load(path)
    assert servable.run_interface == ("session_run", "TensorFlow made no callable: x:0 is both fed and fetched.")
    x = np.array([1.5, -2.0], np.float32)
    code, outputs = serve(servable, {"x": x}, ["doubled"])
    assert code == 200, outputs
    np.testing.assert_array_equal(outputs["doubled"], 2 * x)
    # TF_SessionRun refuses the whole signature for the same reason
    assert serve(servable, {"x": x}) == (400, "running the model: x:0 is both fed and fetched.")
    with caplog.at_level(logging.WARNING, logger="processor"):
        with processor.Processor({"savedmodel_dir": path}) as p:
            np.testing.assert_array_equal(p.predict({"x": x}, output_filter=["doubled"])["doubled"], 2 * x)
    assert "runs through TF_SessionRun, which is slower per request: TensorFlow made no callable: x:0 is both fed " \
           "and fetched." in caplog.text


def build_three_signatures(path: str) -> dict:
    """A TF1 graph with three signatures over one input: "serving_default" (x * w + b, w and b
    variables), "shifted" (x + b) and "echo", which returns its input too (TensorFlow makes no callable
    for it). Returns TensorFlow's own outputs for X, by signature."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    signature = tf1.saved_model.signature_def_utils.predict_signature_def
    with tf.Graph().as_default() as graph:
        x = tf1.placeholder(tf.float32, [None], name="x")
        w = tf1.get_variable("w", initializer=np.float32(1.75))
        b = tf1.get_variable("b", initializer=np.float32(-0.5))
        scaled = tf.add(x * w, b, name="scaled")
        shifted = tf.add(x, b, name="shifted")
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            expected = {"serving_default": {"y": session.run(scaled, {x: X})},
                        "shifted": {"y": session.run(shifted, {x: X})},
                        "echo": {"doubled": session.run(2.0 * x, {x: X})}}
            builder = tf1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
                "serving_default": signature({"x": x}, {"y": scaled}),
                "shifted": signature({"x": x}, {"y": shifted}),
                "echo": signature({"x": x}, {"echo": x, "doubled": tf.identity(2.0 * x, name="doubled")})})
            builder.save()
    return expected


X = np.array([1.5, -2.0, 0.25], np.float32)


@pytest.fixture(scope="module")
def three_signatures(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("three_signatures") / "model")
    return path, build_three_signatures(path)


def serve_signature(servable, name: str, output_filter=()) -> tuple[int, dict | str]:
    return serve(servable, {"x": X}, output_filter, signature_name=name)


@pytest.mark.parametrize("settings", [{}, {"enable_inline_execute": True},
                                      {"session_num": 2, "select_session_policy": "RR"},
                                      {"enable_batching": True}],
                         ids=["defaults", "inline", "two pools RR", "batching"])
def test_every_signature_runs_through_its_own_callables_made_on_its_first_request(three_signatures, settings):
    """The main signature's callables are made at load; another's on its first request (as TF_SessionRun
    makes executors on first use), so a signature no request names costs nothing."""
    path, expected = three_signatures
    servable = load(path, **settings)
    assert servable.run_interface == ("callable", "")
    assert servable.signature_run_interface("shifted") == ("unmade", "")
    for _ in range(3):  # round robin visits both pools
        code, outputs = serve_signature(servable, "shifted")
        assert code == 200, outputs
        assert_matches(outputs, expected["shifted"])
        code, outputs = serve_signature(servable, "serving_default")
        assert code == 200, outputs
        assert_matches(outputs, expected["serving_default"])
    assert servable.signature_run_interface("shifted") == ("callable", "")
    assert servable.signature_run_interface("serving_default") == servable.run_interface
    assert servable.signature_run_interface("echo") == ("unmade", "")  # never asked for
    with pytest.raises(KeyError, match="no signature nonesuch"):
        servable.signature_run_interface("nonesuch")


def test_a_signature_without_a_callable_goes_through_session_run_and_the_log_says_why_once(three_signatures, capfd):
    path, expected = three_signatures
    servable = load(path)
    capfd.readouterr()
    for _ in range(2):
        code, outputs = serve_signature(servable, "echo", ["doubled"])  # part of it: TF_SessionRun anyway
        assert code == 200, outputs
        assert_matches(outputs, expected["echo"])
        assert serve_signature(servable, "echo") == (400, "running the model: x:0 is both fed and fetched.")
    reason = "TensorFlow made no callable: x:0 is both fed and fetched."
    assert servable.signature_run_interface("echo") == ("session_run", reason)
    assert servable.run_interface == ("callable", "")  # the others keep theirs
    assert capfd.readouterr().err.count(f"signature 'echo' runs through TF_SessionRun, which is slower per request: "
                                        f"{reason}") == 1


def test_first_requests_of_a_signature_in_many_threads_at_once_make_one_callable_per_pool(three_signatures):
    path, expected = three_signatures
    servable = load(path, session_num=2, select_session_policy="RR")
    start = threading.Barrier(8)

    def first_requests():
        start.wait()
        return [serve_signature(servable, "shifted") for _ in range(4)]

    with ThreadPoolExecutor(8) as pool:
        answers = [a for answers in pool.map(lambda _: first_requests(), range(8)) for a in answers]
    for code, outputs in answers:
        assert code == 200, outputs
        assert_matches(outputs, expected["shifted"])
    assert servable.signature_run_interface("shifted") == ("callable", "")


def test_a_warmup_request_naming_a_signature_makes_its_callables_before_traffic(three_signatures):
    from processor.loading.warmup import run_warmup
    from tensorflow_serving.apis import predict_pb2 as tfs_predict_pb2
    import tensorflow as tf
    path, _ = three_signatures
    servable = load(path)
    request = tfs_predict_pb2.PredictRequest()
    request.model_spec.signature_name = "shifted"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(X))
    run_warmup(servable, [(processor.FORMAT_TF_SERVING_PREDICT, request.SerializeToString())], 1, "three_signatures")
    assert servable.signature_run_interface("shifted") == ("callable", "")
    assert servable.signature_run_interface("echo") == ("unmade", "")
