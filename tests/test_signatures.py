"""Every SignatureDef of a SavedModel is served, as TF Serving serves them: a Keras 3 export with three
signatures (keras.export.ExportArchive: "serving_default", "serve", "embed", and the loader's
"__saved_model_init_op"), and a TF1 graph whose two signatures share a feature-store table. Each
answer is compared with TensorFlow's own for the same SavedModel; the config's signature_name is the
main one, which a request naming none gets."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

import processor
from model_builders import build_keras_export
from test_batching import batching_metrics

tf = pytest.importorskip("tensorflow")
predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2")
from processor import predict_pb2 as deeprec_pb2  # noqa: E402

TFS = processor.FORMAT_TF_SERVING_PREDICT


@pytest.fixture(scope="module")
def keras_export(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("keras_export") / "model")
    return path, build_keras_export(path)


def feeds_of(expected: dict, signature: str, rows=slice(None)) -> dict:
    return {"ids": expected["ids"][rows]} if signature == "embed" else \
        {"ids": expected["ids"][rows], "dense": expected["dense"][rows]}


def tfs_request(inputs: dict, signature_name: str = "") -> bytes:
    r = predict_pb2.PredictRequest()
    r.model_spec.name = "keras"
    r.model_spec.signature_name = signature_name
    for alias, value in inputs.items():
        r.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return r.SerializeToString()


def tfs_predict(p, inputs: dict, signature_name: str = "") -> predict_pb2.PredictResponse:
    code, body = p.process(tfs_request(inputs, signature_name), TFS)
    assert code == 200, body
    return predict_pb2.PredictResponse.FromString(body)


@pytest.mark.parametrize("signature", ["serving_default", "serve", "embed", ""])
def test_every_signature_of_a_keras_export_answers_as_tensorflow(keras_export, signature):
    path, expected = keras_export
    served = signature or "serving_default"  # a request naming none gets the main one
    output = "rows" if served == "embed" else "score"
    with processor.Processor({"savedmodel_dir": path}) as p:
        response = tfs_predict(p, feeds_of(expected, served), signature)
        assert response.model_spec.signature_name == served
        assert list(response.outputs) == [output]
        np.testing.assert_allclose(tf.make_ndarray(response.outputs[output]), expected[f"{served}/{output}"],
                                   rtol=1e-6, atol=1e-7)
        # The DeepRec format and numpy in and out reach the same signature by name.
        np.testing.assert_allclose(p.predict(feeds_of(expected, served), signature_name=signature)[output],
                                   expected[f"{served}/{output}"], rtol=1e-6, atol=1e-7)


def test_signatures_are_every_signaturedef_but_the_init_op_and_the_main_one_is_configured(keras_export):
    path, expected = keras_export
    saved = tf.saved_model.load(path).signatures
    with processor.Processor({"savedmodel_dir": path}) as p:
        signatures = p.signatures()
        assert list(signatures) == ["serving_default", "embed", "serve"]  # main first, then by name
        assert set(signatures) == set(saved.keys())
        assert p.signature() == signatures["serving_default"]
        embed = p.signature("embed")
        assert [(s["alias"], s["dtype"], s["shape"]) for s in embed["inputs"]] == [("ids", "DT_INT64", [-1])]
        assert [(s["alias"], s["dtype"], s["shape"]) for s in embed["outputs"]] == [("rows", "DT_FLOAT", [-1, 4])]
        assert embed["method_name"] == "tensorflow/serving/predict"
        with pytest.raises(processor.RequestError, match='Serving signature key "nope" not found.'):
            p.signature("nope")
    with processor.Processor({"savedmodel_dir": path, "signature_name": "embed"}) as p:
        assert list(p.signatures()) == ["embed", "serve", "serving_default"]
        response = tfs_predict(p, feeds_of(expected, "embed"))  # unnamed: the configured one
        assert response.model_spec.signature_name == "embed"
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["rows"]), expected["embed/rows"], rtol=1e-6)
        # What an empty request answers (the C ABI's way to the signature): DeepRec's description of the
        # main one, the others beside it.
        code, body = p.process(b"")
        description = json.loads(body)
        assert code == 200 and description["signature_name"] == "embed"
        assert [s["signature_name"] for s in description["other_signatures"]] == ["serve", "serving_default"]


def test_a_name_the_model_lacks_is_deeprecs_main_signature_or_refused(keras_export):
    """DeepRec's processor serves its one signature whatever a DeepRec request names; here a request
    naming one of the model's signatures gets that one, and another name the main one, unless
    strict_signature_name refuses it. TF Serving's format always refuses it."""
    path, expected = keras_export
    with processor.Processor({"savedmodel_dir": path}) as p:
        lenient = p.predict(feeds_of(expected, "serve"), signature_name="nope")["score"]
        np.testing.assert_allclose(lenient, expected["serving_default/score"], rtol=1e-6)
        code, body = p.process(tfs_request(feeds_of(expected, "serve"), "nope"), TFS)
        assert (code, body.decode()) == (400, 'Serving signature key "nope" not found.')
        # A host that chose the signature by name (REST, Classify, Regress) asks for the strict rule on
        # the request: a swap to a version without it cannot answer with the main signature's outputs.
        with pytest.raises(processor.RequestError) as raised:
            p.predict(feeds_of(expected, "serve"), signature_name="nope", strict_signature_name=True)
        assert (raised.value.code, raised.value.message) == (
            400, "signature_name 'nope' is not served; this model serves 'serving_default' (and 'embed', 'serve')")
        np.testing.assert_allclose(p.predict(feeds_of(expected, "embed"), signature_name="embed",
                                             strict_signature_name=True)["rows"], expected["embed/rows"], rtol=1e-6)
    with processor.Processor({"savedmodel_dir": path, "strict_signature_name": True}) as p:
        with pytest.raises(processor.RequestError) as raised:
            p.predict(feeds_of(expected, "serve"), signature_name="nope")
        assert (raised.value.code, raised.value.message) == (
            400, "signature_name 'nope' is not served; this model serves 'serving_default' (and 'embed', 'serve')")
        np.testing.assert_allclose(p.predict(feeds_of(expected, "embed"), signature_name="embed")["rows"],
                                   expected["embed/rows"], rtol=1e-6)


def test_errors_name_the_requested_signatures_tensors(keras_export):
    path, expected = keras_export
    with processor.Processor({"savedmodel_dir": path}) as p:
        code, body = p.process(tfs_request(feeds_of(expected, "serve"), "embed"), TFS)
        assert (code, body.decode()) == (
            400, "input tensor alias not found in signature: dense. Inputs expected to be in the set {ids}.")
        code, body = p.process(tfs_request(feeds_of(expected, "embed"), "serve"), TFS)
        assert (code, body.decode()) == (400, "missing input 'dense'")
        request = deeprec_pb2.PredictRequest(signature_name="embed", output_filter=["score"])
        processor.tensors.to_array_proto(expected["ids"], request.inputs["ids"])
        code, body = p.process(request.SerializeToString())
        assert (code, body.decode()) == (400, "unknown output 'score' in output_filter; the signature's outputs are 'rows'")
        # and the model keeps serving every signature
        np.testing.assert_allclose(tfs_predict(p, feeds_of(expected, "embed"), "embed").outputs["rows"].float_val,
                                   expected["embed/rows"].reshape(-1), rtol=1e-6)


def test_with_batching_every_signature_answers_its_own_rows(keras_export):
    """Threads send single rows of every signature at once: each answer is its own row's, by
    TensorFlow's outputs for the whole batch."""
    path, expected = keras_export
    config = {"savedmodel_dir": path, "enable_batching": True,
              "batching_parameters": {"max_batch_size": 8, "batch_timeout_micros": 2000}}
    failures = []
    with processor.Processor(config) as p:
        def client(worker: int):
            for step in range(40):
                row = (worker + step) % 8
                signature = ("serving_default", "serve", "embed")[(worker + step) % 3]
                output = "rows" if signature == "embed" else "score"
                try:
                    answer = tfs_predict(p, feeds_of(expected, signature, slice(row, row + 1)), signature)
                    np.testing.assert_allclose(tf.make_ndarray(answer.outputs[output]),
                                               expected[f"{signature}/{output}"][row:row + 1], rtol=1e-6, atol=1e-7)
                except AssertionError as e:
                    failures.append(f"{signature} row {row}: {e}")
        threads = [threading.Thread(target=client, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not failures, failures[:3]


def build_two_signature_lookup(path: str) -> dict:
    """A TF1 graph whose signatures share one embedding table: "serving_default" (a score of the ids'
    rows), "rows" (the rows) and "whole" (the whole table). Returns TensorFlow's answers for IDS, the
    weights and the table."""
    tf1 = tf.compat.v1
    with tf.Graph().as_default() as graph:
        ids = tf1.placeholder(tf.int64, [None], name="ids")
        table = tf1.get_variable("table", [300, 4], initializer=tf1.random_normal_initializer(seed=5))
        weights = tf1.get_variable("weights", [4, 1], initializer=tf1.random_normal_initializer(seed=6))
        rows = tf.identity(tf.nn.embedding_lookup(table, ids), name="rows")
        score = tf.identity(tf.matmul(rows, weights)[:, 0], name="score")
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            builder = tf1.saved_model.Builder(path)
            predict = tf1.saved_model.signature_def_utils.predict_signature_def
            builder.add_meta_graph_and_variables(session, ["serve"], saver=tf1.train.Saver(), signature_def_map={
                "serving_default": predict(inputs={"ids": ids}, outputs={"score": score}),
                "rows": predict(inputs={"ids": ids}, outputs={"rows": rows}),
                "whole": predict(inputs={"ids": ids}, outputs={"table": tf.identity(table, name="whole_table")})})
            builder.save()
            return dict(zip(("score", "rows", "weights", "table"), session.run([score, rows, weights, table], {ids: IDS})))


IDS = np.array([0, 299, 17, 17, 150], np.int64)


def test_signatures_sharing_a_feature_store_table_answer_as_tensorflow(tmp_path):
    """Both signatures read the table from the store (an id past its rows reads the default row, where
    TensorFlow's gather would fail), and its rows equal TensorFlow's."""
    expected = build_two_signature_lookup(str(tmp_path / "model"))
    config = {"savedmodel_dir": str(tmp_path / "model"), "feature_store_type": "local", "embedding_min_rows": 100,
              "embedding_default_value": 0.25}
    with processor.Processor(config) as p:
        np.testing.assert_allclose(p.predict({"ids": IDS})["score"], expected["score"], rtol=1e-6)
        np.testing.assert_array_equal(tf.make_ndarray(tfs_predict(p, {"ids": IDS}, "rows").outputs["rows"]),
                                      expected["rows"])
        past = np.array([10**9], np.int64)
        np.testing.assert_array_equal(p.predict({"ids": past}, signature_name="rows")["rows"], [[0.25] * 4])
        assert p.predict({"ids": past})["score"][0] == pytest.approx(0.25 * expected["weights"].sum(), rel=1e-6)


def test_a_signature_reading_a_store_table_whole_is_left_out_and_named(tmp_path, capfd):
    """A signature that reads the table otherwise than by gathers would read a variable the store never
    restores: the load leaves it out (the log says why) and serves the others; without the feature
    store it is served."""
    expected = build_two_signature_lookup(str(tmp_path / "model"))
    config = {"savedmodel_dir": str(tmp_path / "model"), "feature_store_type": "local", "embedding_min_rows": 100}
    with processor.Processor(config) as p:
        assert list(p.signatures()) == ["serving_default", "rows"]
        code, body = p.process(tfs_request({"ids": IDS}, "whole"), TFS)
        assert (code, body.decode()) == (400, 'Serving signature key "whole" not found.')
        np.testing.assert_allclose(p.predict({"ids": IDS}, signature_name="rows")["rows"], expected["rows"], rtol=0)
    assert "signature 'whole' is not served: it reads the feature store's variable 'table' otherwise than by " \
           "gathering rows: a signature outputs it whole ('whole_table')" in capfd.readouterr().err
    with processor.Processor({"savedmodel_dir": str(tmp_path / "model")}) as p:
        np.testing.assert_array_equal(p.predict({"ids": IDS}, signature_name="whole")["table"], expected["table"])


def build_versioned(path: str, scale: float, extra: bool) -> None:
    """A TF1 graph: "serving_default" answers x * scale; with `extra`, an "extra" signature answers
    x + scale too."""
    tf1 = tf.compat.v1
    with tf.Graph().as_default() as graph:
        x = tf1.placeholder(tf.float32, [None], name="x")
        signatures = {"serving_default": tf1.saved_model.signature_def_utils.predict_signature_def(
            inputs={"x": x}, outputs={"y": tf.multiply(x, scale, name="times")})}
        if extra:
            signatures["extra"] = tf1.saved_model.signature_def_utils.predict_signature_def(
                inputs={"x": x}, outputs={"y": tf.add(x, scale, name="plus")})
        with tf1.Session(graph=graph) as session:
            builder = tf1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
            builder.save()


def test_a_new_version_brings_its_own_signatures(tmp_path):
    """Version 1 has an "extra" signature, version 2 does not: after the swap, signatures() and the
    requests naming "extra" follow version 2 (TF Serving's format refuses the name; DeepRec's gets the
    main signature), never version 1's graph."""
    x = np.array([1.0, 2.0], np.float32)
    build_versioned(str(tmp_path / "model" / "1"), 10.0, extra=True)
    with processor.Processor({"savedmodel_dir": str(tmp_path / "model"), "poll_interval_seconds": 0}) as p:
        assert list(p.signatures()) == ["serving_default", "extra"]
        np.testing.assert_array_equal(p.predict({"x": x}, signature_name="extra")["y"], x + 10)
        build_versioned(str(tmp_path / "model" / "2"), 100.0, extra=False)
        assert p.update()
        assert list(p.signatures()) == ["serving_default"]
        code, body = p.process(tfs_request({"x": x}, "extra"), TFS)
        assert (code, body.decode()) == (400, 'Serving signature key "extra" not found.')
        np.testing.assert_array_equal(p.predict({"x": x}, signature_name="extra")["y"], x * 100)  # DeepRec's rule
        np.testing.assert_array_equal(tf.make_ndarray(tfs_predict(p, {"x": x}).outputs["y"]), x * 100)


def build_two_entries(path: str) -> None:
    """Two signatures fetching the same output from different feeds: "serving_default" feeds x, and
    "from_hidden" feeds h = x + 1 directly; y = h * 2. Requests of the two must never merge: a merged run
    would feed one's rows where the other's belong."""
    tf1 = tf.compat.v1
    with tf.Graph().as_default() as graph:
        x = tf1.placeholder(tf.float32, [None], name="x")
        h = tf.add(x, 1.0, name="h")
        y = tf.multiply(h, 2.0, name="y")
        predict = tf1.saved_model.signature_def_utils.predict_signature_def
        with tf1.Session(graph=graph) as session:
            builder = tf1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
                "serving_default": predict(inputs={"x": x}, outputs={"y": y}),
                "from_hidden": predict(inputs={"h": h}, outputs={"y": y})})
            builder.save()


def test_batching_merges_requests_of_one_signature_never_of_two(tmp_path):
    """Four requests, two per signature, arriving interleaved, the two signatures fetching the same
    output: the first waits until two mergeable rows are queued, so each signature's pair merges into
    one run, and every answer is its own (y = (x + 1) * 2, or h * 2)."""
    build_two_entries(str(tmp_path / "model"))
    config = {"savedmodel_dir": str(tmp_path / "model"), "enable_batching": True, "batching_parameters": {
        "max_batch_size": 2, "batch_timeout_micros": 20_000_000, "num_batch_threads": 1}}
    answers, failures = {}, []
    with processor.Processor(config) as p:
        def client(signature: str, value: float):
            name = "x" if signature == "serving_default" else "h"
            try:
                answers[(signature, value)] = float(p.predict({name: np.array([value], np.float32)},
                                                              signature_name=signature)["y"][0])
            except Exception as e:  # noqa: BLE001 - reported below
                failures.append(repr(e))
        # They arrive interleaved, a signature's request next to the other's: merging by output alone
        # would pair them.
        threads = [threading.Thread(target=client, args=(signature, value))
                   for value in (1.0, 10.0) for signature in ("serving_default", "from_hidden")]
        for t in threads:
            t.start()
            time.sleep(0.2)
        for t in threads:
            t.join()
        runs = batching_metrics(p)
    assert not failures, failures
    assert answers == {("serving_default", 1.0): 4.0, ("serving_default", 10.0): 22.0,
                       ("from_hidden", 1.0): 2.0, ("from_hidden", 10.0): 20.0}
    assert runs[':processor:batch_runs{kind="merged"}'] == 2 and runs[':processor:batch_runs{kind="all"}'] == 2
