"""Warmup: every new version serves the warmup requests before it takes traffic; a failing warmup
fails that version's load, not the process."""
from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest

import processor
from processor import tf_serving_warmup_pb2
from processor.formats import tfrecord
from lifecycle_helpers import serialize
from wire_helpers import length_delimited


def write_tfrecord(path, records):
    with open(path, "wb") as f:
        for record in records:
            tfrecord.write_record(f, record)


def tf_serving_prediction_log(batch) -> bytes:
    """A TF Serving PredictionLog built from TensorFlow's own TensorProtos."""
    import tensorflow as tf
    from processor import tf_serving_warmup_pb2
    log = tf_serving_warmup_pb2.PredictionLog()
    request = log.predict_log.request
    request.model_spec.name = "model"
    request.model_spec.signature_name = "serving_default"
    for name, value in batch.items():
        proto = tf.make_tensor_proto(np.asarray(value) if name != "category" else [bytes(v) for v in value])
        request.inputs[name].ParseFromString(proto.SerializeToString())
    return log.SerializeToString()


def test_tfrecord_reader_matches_tensorflows_writer(tmp_path):
    import tensorflow as tf
    path = str(tmp_path / "records")
    payloads = [b"", b"a", bytes(range(256)) * 40]
    with tf.io.TFRecordWriter(path) as writer:
        for payload in payloads:
            writer.write(payload)
    assert list(tfrecord.iter_records(path)) == payloads
    ours = tmp_path / "ours"
    write_tfrecord(ours, payloads)
    assert list(tf.compat.v1.io.tf_record_iterator(str(ours))) == payloads  # works in graph mode too


def test_single_request_file_deeprec_format(rec_model, batch, tmp_path, caplog):
    (tmp_path / "warmup.bin").write_bytes(serialize(batch))
    with caplog.at_level(logging.INFO, logger="processor"):
        with processor.Processor(rec_model.config(warmup_file_name=str(tmp_path / "warmup.bin"),
                                                  warmup_iterations=3)) as p:
            assert p.predict(batch)["prob"].shape == (6,)
    assert "with 1 request(s) x 3" in caplog.text


def test_tfrecord_of_predict_requests_and_of_tf_serving_logs(rec_model, batch, tmp_path, caplog):
    write_tfrecord(tmp_path / "ours.tfrecord", [serialize(batch), serialize({k: v[:2] for k, v in batch.items()})])
    write_tfrecord(tmp_path / "tf_serving.tfrecord", [tf_serving_prediction_log(batch)] * 2)
    with caplog.at_level(logging.INFO, logger="processor"):
        for name in ("ours.tfrecord", "tf_serving.tfrecord"):
            with processor.Processor(rec_model.config(warmup_file_name=str(tmp_path / name))):
                pass
    assert caplog.text.count("with 2 request(s) x 1") == 2


def test_tf_serving_records_are_served_as_tf_serving_requests(batch):
    from processor.loading.warmup import _record_to_requests

    def parsed(requests):
        return [(f, tf_serving_warmup_pb2.PredictRequest.FromString(r)) for f, r in requests]
    log = tf_serving_warmup_pb2.PredictionLog.FromString(tf_serving_prediction_log(batch))
    expected = (processor.FORMAT_TF_SERVING_PREDICT, log.predict_log.request)
    assert parsed(_record_to_requests(log.SerializeToString())) == [expected]
    # predict_streamed_log (7): its requests, each as it is
    streamed = tf_serving_warmup_pb2.PredictionLog()
    streamed.predict_streamed_log.request.extend([log.predict_log.request] * 3)
    assert parsed(_record_to_requests(streamed.SerializeToString())) == [expected] * 3
    assert _record_to_requests(serialize(batch)) == [(processor.FORMAT_DEEPREC, serialize(batch))]


def test_tf_serving_logs_warm_up_whatever_version_they_name_but_not_another_signature(rec_model, batch, tmp_path):
    """TF Serving's warmup runs a log's request on the version being loaded whatever its model_spec
    names (logs are recorded from another server, another version); a signature the model lacks fails
    the load with TF Serving's message."""
    prediction_log_pb2 = pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")
    log = prediction_log_pb2.PredictionLog.FromString(tf_serving_prediction_log(batch))  # TF Serving's own
    log.predict_log.request.model_spec.name = "recorded_elsewhere"
    log.predict_log.request.model_spec.version.value = 12345
    write_tfrecord(tmp_path / "versioned.tfrecord", [log.SerializeToString()])
    with processor.Processor(rec_model.config(warmup_file_name=str(tmp_path / "versioned.tfrecord"))) as p:
        assert p.predict(batch)["prob"].shape == (6,)
    log.predict_log.request.model_spec.signature_name = "classify"
    write_tfrecord(tmp_path / "other_signature.tfrecord", [log.SerializeToString()])
    with pytest.raises(processor.ModelLoadError, match='request 0 answered 400: Serving signature key "classify" '
                                                       'not found.'):
        processor.Processor(rec_model.config(warmup_file_name=str(tmp_path / "other_signature.tfrecord")))


def other_prediction_log(field: int) -> bytes:
    """A TF Serving PredictionLog of another kind, as tensorflow_serving/apis/prediction_log.proto lays
    it out: classify_log = 2 / regress_log = 3 {request = 1: ClassificationRequest or RegressionRequest
    {model_spec = 1: ModelSpec {name = 1}, input = 2: Input {example_list = 1 {examples = 1}}}},
    multi_inference_log = 4, session_run_log = 5 (their request = 1 likewise starts with model_spec)."""
    model_spec = length_delimited(1, length_delimited(1, b"model"))
    example = length_delimited(1, b"")  # an empty tf.Example
    request = model_spec + length_delimited(2, length_delimited(1, length_delimited(1, example)))
    metadata = length_delimited(1, length_delimited(1, length_delimited(1, b"model")))  # log_metadata
    return metadata + length_delimited(field, length_delimited(1, request))


@pytest.mark.parametrize("field,kind", [(2, "classify_log"), (3, "regress_log"), (4, "multi_inference_log"),
                                        (5, "session_run_log")])
def test_other_prediction_log_kinds_are_named(rec_model, batch, tmp_path, field, kind):
    write_tfrecord(tmp_path / "warmup.tfrecord", [tf_serving_prediction_log(batch), other_prediction_log(field)])
    with pytest.raises(processor.ModelLoadError) as error:
        processor.Processor(rec_model.config(warmup_file_name=str(tmp_path / "warmup.tfrecord")))
    assert (f"record 1 is not a PredictRequest or PredictionLog: it is a TF Serving PredictionLog with a {kind} "
            f"of another kind than predict") in str(error.value)


def test_savedmodel_assets_extra_file_is_picked_up(rec_model, batch, tmp_path, caplog):
    savedmodel = tmp_path / "saved_model"
    shutil.copytree(rec_model.savedmodel_dir, savedmodel)
    os.makedirs(savedmodel / "assets.extra")
    write_tfrecord(savedmodel / "assets.extra" / "tf_serving_warmup_requests", [tf_serving_prediction_log(batch)])
    with caplog.at_level(logging.INFO, logger="processor"):
        with processor.Processor(rec_model.config(savedmodel_dir=str(savedmodel))):
            pass
    assert "with 1 request(s) x 1" in caplog.text


@pytest.mark.parametrize("content,message", [
    (None, "cannot read warmup file"),
    (b"\x0a\xff\xff", "neither a PredictRequest nor a TFRecord file"),
    ("bad_input", "warmup of"),
    ("bad_crc", "data checksum mismatch"),
])
def test_bad_warmup_fails_the_load_with_a_reason(rec_model, batch, tmp_path, content, message):
    path = tmp_path / "warmup"
    if content == "bad_input":
        path.write_bytes(serialize({**batch, "nope": batch["user_id"]}))
    elif content == "bad_crc":
        write_tfrecord(path, [serialize(batch)])
        data = bytearray(path.read_bytes())
        data[20] ^= 1
        path.write_bytes(bytes(data))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(processor.ModelLoadError) as error:
        processor.Processor(rec_model.config(warmup_file_name=str(path)))
    assert message in str(error.value)


def test_warmup_failure_on_update_keeps_the_serving_version(rec_model, batch, tmp_path):
    model = rec_model.copy(tmp_path)
    warmup = tmp_path / "warmup.bin"
    warmup.write_bytes(serialize(batch))
    with processor.Processor(model.config(warmup_file_name=str(warmup), poll_interval_seconds=0)) as p:
        serving = p.model_info().model_path
        warmup.write_bytes(serialize({**batch, "nope": batch["user_id"]}))  # the next version's warmup fails
        model.trainer.train(2)
        model.trainer.save_checkpoint(model.checkpoint_dir)
        with pytest.raises(processor.ModelLoadError, match="warmup of .* failed: request 0 answered 400"):
            p.update()
        info = p.model_info()
        assert info.model_path == serving and info.updates_failed == 1


def test_a_failed_warmup_names_a_versioned_savedmodel_once(rec_model, batch, tmp_path):
    base = tmp_path / "models"
    shutil.copytree(rec_model.savedmodel_dir, base / "3")
    (tmp_path / "warmup.bin").write_bytes(serialize({**batch, "nope": batch["user_id"]}))
    with pytest.raises(processor.ModelLoadError) as error:
        processor.Processor({"savedmodel_dir": str(base), "warmup_file_name": str(tmp_path / "warmup.bin"),
                             "poll_interval_seconds": 0, "init_timeout_minutes": 0})
    assert f"warmup of {base / '3'} failed: request 0 answered 400" in str(error.value)


def test_enable_model_warmup_false_reads_no_warmup_file(rec_model, batch, tmp_path):
    """TF Serving's --enable_model_warmup=false: a version loads without its warmup, even one that
    would fail it."""
    (tmp_path / "bad.bin").write_bytes(serialize({"nope": np.array([1])}))
    with pytest.raises(processor.ModelLoadError, match="warmup of .* failed"):
        processor.Processor(rec_model.config(warmup_file_name=str(tmp_path / "bad.bin")))
    with processor.Processor(rec_model.config(warmup_file_name=str(tmp_path / "bad.bin"),
                                              enable_model_warmup=False)) as p:
        assert p.predict(batch)["prob"].shape == (6,)
