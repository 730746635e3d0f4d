"""Serving a real model: outputs equal TensorFlow's own for the same checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest

import processor
from lifecycle_helpers import serialize
from processor import predict_pb2, tensors

TOLERANCE = 1e-5


def assert_matches(outputs: dict, expected: dict):
    assert sorted(outputs) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name], value, rtol=TOLERANCE, atol=TOLERANCE, err_msg=name)


def test_serves_the_newest_checkpoint_like_tensorflow(rec_model, reference, batch):
    newest = rec_model.prefixes()[-1]
    with processor.Processor(rec_model.config()) as p:
        assert_matches(p.predict(batch), reference.predict(newest, batch))
        assert p.model_info().model_path == newest


def test_model_info_reports_the_served_version(rec_model):
    newest = rec_model.prefixes()[-1]
    with processor.Processor(rec_model.config()) as p:
        info = p.model_info()
        code, raw = p.serving_model_info()
    assert code == 200
    assert predict_pb2.ServingModelInfo.FromString(raw).model_path == newest
    assert info.model_path == newest
    assert info.version_step == int(newest.rsplit("-", 1)[1])
    assert info.savedmodel_dir == rec_model.savedmodel_dir
    assert info.signature_name == "serving_default"
    assert info.load_time_unix_ms > 0 and info.load_duration_ms >= 0
    assert (info.updates_applied, info.updates_failed) == (0, 0)
    assert (info.delta_step, info.savedmodel_version, info.pinned) == (-1, -1, False)


def test_without_checkpoint_dir_the_savedmodels_own_variables_serve(rec_model, reference, batch):
    variables = rec_model.savedmodel_dir + "/variables/variables"
    with processor.Processor({"savedmodel_dir": rec_model.savedmodel_dir}) as p:
        assert_matches(p.predict(batch), reference.predict(variables, batch))
        info = p.model_info()
    assert info.model_path == rec_model.savedmodel_dir
    assert info.version_step == -1


def test_process_bytes_matches_predict(rec_model, batch):
    with processor.Processor(rec_model.config()) as p:
        request = predict_pb2.PredictRequest()
        for name, value in batch.items():
            tensors.to_array_proto(np.asarray(value), request.inputs[name])
        code, body = p.process(request.SerializeToString())
        assert code == 200
        response = predict_pb2.PredictResponse.FromString(body)
        expected = p.predict(batch)
    assert sorted(response.outputs) == ["item_vector", "logits", "prob"]
    for name, value in expected.items():
        np.testing.assert_array_equal(tensors.from_array_proto(response.outputs[name]), value)


def test_output_filter_by_alias_and_tensor_name(rec_model, reference, batch):
    newest = rec_model.prefixes()[-1]
    with processor.Processor(rec_model.config()) as p:
        outputs = p.predict(batch, output_filter=["prob", "logits:0"])
    assert sorted(outputs) == ["logits:0", "prob"]
    expected = reference.predict(newest, batch, ["prob", "logits"])
    np.testing.assert_allclose(outputs["prob"], expected["prob"], rtol=TOLERANCE, atol=TOLERANCE)
    np.testing.assert_allclose(outputs["logits:0"], expected["logits"], rtol=TOLERANCE, atol=TOLERANCE)


def test_inputs_may_be_keyed_by_tensor_name(rec_model, batch):
    with processor.Processor(rec_model.config()) as p:
        by_alias = p.predict(batch)
        by_name = p.predict({f"{name}:0": value for name, value in batch.items()})
    for name in by_alias:
        np.testing.assert_array_equal(by_alias[name], by_name[name])


def test_empty_request_describes_the_signature(rec_model):
    with processor.Processor(rec_model.config()) as p:
        code, body = p.process(b"")
    assert code == 200
    signature = json.loads(body)
    assert signature["signature_name"] == "serving_default"
    inputs = {i["name"]: i for i in signature["inputs"]}
    # DeepRec's entry (model_instance.cc GenerateJsonSignatureFormat: name is the alias), this project's beside it
    assert inputs["user_id"] == {"name": "user_id", "shape": [-1], "type": "DT_INT64",
                                 "alias": "user_id", "tensor_name": "user_id:0", "dtype": "DT_INT64"}
    assert inputs["dense"]["shape"] == [-1, 4] and inputs["dense"]["type"] == "DT_FLOAT"
    assert inputs["category"]["type"] == "DT_STRING"
    assert [o["name"] for o in signature["outputs"]] == ["item_vector", "logits", "prob"]


def test_explicit_served_signature_name_is_accepted(rec_model, batch):
    with processor.Processor(rec_model.config()) as p:
        np.testing.assert_array_equal(p.predict(batch, signature_name="serving_default")["prob"],
                                      p.predict(batch)["prob"])


def test_another_signature_name_is_ignored_as_deeprec_does_unless_strict(rec_model, batch):
    request = predict_pb2.PredictRequest.FromString(serialize(batch))
    request.signature_name = "other"
    with processor.Processor(rec_model.config()) as p:
        code, body = p.process(request.SerializeToString())
        assert code == 200
        expected = p.predict(batch)["prob"]
        served = predict_pb2.PredictResponse.FromString(body).outputs["prob"]
        np.testing.assert_array_equal(tensors.from_array_proto(served), expected)
    with processor.Processor(rec_model.config(strict_signature_name=True)) as p:
        assert p.process(request.SerializeToString()) == \
            (400, b"signature_name 'other' is not served; this model serves 'serving_default'")
        assert p.process(serialize(batch))[0] == 200  # and it keeps serving


def test_thread_settings_are_applied_and_serve_the_same_values(rec_model, batch):
    with processor.Processor(rec_model.config()) as default:
        expected = default.predict(batch)
    for settings in ({"intra_op_parallelism_threads": 1, "inter_op_parallelism_threads": 1},
                     {"enable_inline_execute": True}, {"use_per_session_threads": True}):
        with processor.Processor(rec_model.config(**settings)) as p:
            assert_matches(p.predict(batch), expected)


def test_update_swaps_to_a_newer_checkpoint(rec_model, reference, batch, tmp_path):
    model = rec_model.copy(tmp_path)
    with processor.Processor(model.config()) as p:
        first = model.prefixes()[-1]
        assert p.update() is False  # nothing newer
        model.trainer.train(5, seed=3)
        newer = model.trainer.save_checkpoint(model.checkpoint_dir)
        assert p.update() is True
        assert_matches(p.predict(batch), reference.predict(newer, batch))
        info = p.model_info()
        assert info.model_path == newer and info.updates_applied == 1
        assert not np.allclose(reference.predict(first, batch)["prob"], p.predict(batch)["prob"])


def test_closed_processor_answers_503(rec_model, batch):
    p = processor.Processor(rec_model.config())
    p.close()
    code, body = p.process(b"")
    assert code == 503 and b"closed" in body
    with pytest.raises(processor.RequestError) as error:
        p.predict(batch)
    assert error.value.code == 503
    p.close()  # idempotent


def test_consecutive_requests_of_one_shape_get_their_own_answers(rec_model, reference):
    """A thread's input tensors are written in place by its next request of the same shape: every answer
    must still be TensorFlow's for that request, across shape changes, bad requests and an output that
    aliases an input (below)."""
    import recommendation_model
    rng = np.random.default_rng(11)
    batches = [recommendation_model.random_batch(n, rng) for n in (8, 8, 3, 8, 8)]
    newest = rec_model.prefixes()[-1]
    with processor.Processor(rec_model.config()) as p:
        for batch in batches + batches[::-1]:
            code, body = p.process(serialize(batch))
            assert code == 200
            outputs = {name: tensors.from_array_proto(array)
                       for name, array in predict_pb2.PredictResponse.FromString(body).outputs.items()}
            assert_matches(outputs, reference.predict(newest, batch))
            assert p.process(b"\x12\x03bad")[0] == 400


def test_an_output_aliasing_its_input_is_not_overwritten_by_the_next_request(echo_model):
    """The echo model's outputs are its inputs (Identity), so TensorFlow's outputs share the input
    tensors' buffers; each answer must still be its own request's values."""
    from model_builders import ECHO_DTYPES
    with processor.Processor({"savedmodel_dir": echo_model}) as p:
        for shift in range(4):
            inputs = {alias: np.roll(np.array(values, dtype=np_dtype), shift).reshape(2, 2)
                      for alias, (_, np_dtype, values) in ECHO_DTYPES.items()}
            outputs = p.predict(inputs)
            for alias, value in inputs.items():
                np.testing.assert_array_equal(outputs[alias], value, err_msg=alias)


def test_a_signature_of_hundreds_of_inputs_binds_each_by_alias_or_tensor_name(tmp_path):
    """Inputs are looked up in a sorted table of the signature's names: 300 inputs, sent in a shuffled
    order, some by alias and some by tensor name (names of every length, so that the table's order by
    length then bytes is exercised), each land on their own placeholder."""
    from model_builders import build_wide_model
    features = 300
    path = build_wide_model(str(tmp_path / "wide"), features)
    rng = np.random.default_rng(3)
    values = rng.standard_normal((features, 5)).astype(np.float32)
    request = predict_pb2.PredictRequest()
    for i in rng.permutation(features):
        name = f"f{i}:0" if i % 3 == 0 else f"feature_{i}"
        tensors.to_array_proto(values[i], request.inputs[name])
    with processor.Processor({"savedmodel_dir": path}) as p:
        code, body = p.process(request.SerializeToString())
        assert code == 200, body
        outputs = {name: tensors.from_array_proto(array) for name, array in predict_pb2.PredictResponse.FromString(body).outputs.items()}
        np.testing.assert_array_equal(outputs["stacked"], values.T)
        np.testing.assert_allclose(outputs["weighted"], (np.arange(1, features + 1)[:, None] * values).sum(axis=0), rtol=1e-5)

        del request.inputs["feature_1"]
        request.inputs["feature_1:0"].CopyFrom(request.inputs["feature_2"])  # neither alias nor tensor name
        code, body = p.process(request.SerializeToString())
    assert code == 400
    message = body.decode()
    assert message.startswith("unknown input 'feature_1:0'; the signature's inputs are 'feature_"), message
    assert message.endswith(" and 280 more") and message.split("inputs are ")[1].count("'feature_") == 20, message


def test_an_alias_wins_over_a_tensor_name_spelled_the_same(tmp_path):
    """Alias "x:0" names placeholder y, while placeholder x (tensor name "x:0") has alias "other":
    a request naming "x:0" feeds y, as the signature's aliases come first."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [None], name="x")
        y = tf1.placeholder(tf.float32, [None], name="y")
        with tf1.Session(graph=graph) as session:
            builder = tf1.saved_model.Builder(str(tmp_path / "clash"))
            signature = tf1.saved_model.signature_def_utils.predict_signature_def(
                inputs={"x:0": y, "other": x}, outputs={"difference": tf.subtract(x, y, name="difference")})
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
            builder.save()
    with processor.Processor({"savedmodel_dir": str(tmp_path / "clash")}) as p:
        outputs = p.predict({"x:0": np.array([1.0], np.float32), "other": np.array([10.0], np.float32)})
    np.testing.assert_array_equal(outputs["difference"], [9.0])


def test_serving_never_imports_tensorflows_python_package_nor_the_training_helpers(rec_model):
    """Serving runs on TensorFlow's C libraries alone: a process that serves (and polls) never imports
    the `tensorflow` Python package (seconds of start-up, and its own protobuf) nor processor.training."""
    import subprocess
    import sys
    code = ("import json, sys, processor\n"
            f"with processor.Processor(json.loads({json.dumps(json.dumps(rec_model.config(poll_interval_seconds=0.1)))})) as p:\n"
            "    p.update()\n"
            "print(sorted(m for m in ('tensorflow', 'processor.training') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
