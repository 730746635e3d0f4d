"""Metrics: Prometheus text exposition with TF Serving's names, parsed by prometheus_client itself."""
from __future__ import annotations

import ctypes

import pytest
from prometheus_client.parser import text_string_to_metric_families

import processor
from abi import CAbi
from lifecycle_helpers import serialize


def samples(text: str) -> dict:
    """{(name, frozenset(labels)): value} for every sample of the exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # the parser reports counters as OpenMetrics "<name>_total"; TF Serving names them bare
            name = family.name if sample.name == family.name + "_total" else sample.name
            out[(name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(parsed, name, **labels):
    return parsed[(name, frozenset(labels.items()))]


def test_request_counts_latency_and_version(rec_model, batch, tmp_path):
    model = rec_model.copy(tmp_path)
    with processor.Processor(model.config(model_name="ranker", poll_interval_seconds=0)) as p:
        request = serialize(batch)
        for _ in range(7):
            assert p.process(request)[0] == 200
        for _ in range(3):
            assert p.process(b"\xff")[0] == 400
        p.predict(batch)  # its signature lookup is not a request; the prediction is
        parsed = samples(p.metrics())
        m = {"model_name": "ranker"}
        assert value(parsed, ":tensorflow:serving:request_count", status="OK", **m) == 8
        assert value(parsed, ":tensorflow:serving:request_count", status="INVALID_ARGUMENT", **m) == 3
        assert value(parsed, ":tensorflow:serving:request_count", status="UNAVAILABLE", **m) == 0
        latency = {"API": "predict", "entrypoint": "process", **m}
        assert value(parsed, ":tensorflow:serving:request_latency_count", **latency) == 11
        assert value(parsed, ":tensorflow:serving:request_latency_bucket", le="+Inf", **latency) == 11
        buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in parsed.items()
                         if name == ":tensorflow:serving:request_latency_bucket")
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
        assert value(parsed, ":tensorflow:serving:request_latency_sum", **latency) > 0
        assert value(parsed, ":tensorflow:serving:model_ready", **m) == 1
        assert value(parsed, ":tensorflow:serving:model_version", **m) == p.model_info().version_step
        assert value(parsed, ":tensorflow:serving:load_count", status="success", **m) == 1
        assert value(parsed, ":tensorflow:serving:load_latency", **m) == p.model_info().load_duration_ms * 1000

        model.trainer.train(1)
        newer = model.trainer.save_checkpoint(model.checkpoint_dir)
        assert p.update()
        parsed = samples(p.metrics())
        assert value(parsed, ":tensorflow:serving:model_version", **m) == int(newer.rsplit("-", 1)[1])
        assert value(parsed, ":tensorflow:serving:load_count", status="success", **m) == 2
        assert value(parsed, ":tensorflow:serving:load_count", status="failure", **m) == 0


def test_get_metrics_through_the_c_abi(rec_model):
    abi = CAbi()
    abi.lib.get_metrics.restype = ctypes.c_int
    abi.lib.get_metrics.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int)]
    handle, state = abi.initialize(rec_model.config(model_name='we"ird\\name', poll_interval_seconds=0))
    assert state == 0
    try:
        abi.process(handle, b"")
        out, size = ctypes.c_void_p(), ctypes.c_int()
        assert abi.lib.get_metrics(handle, ctypes.byref(out), ctypes.byref(size)) == 200
        text = ctypes.string_at(out.value, size.value).decode()
        abi.lib.free_buffer(out)
        parsed = samples(text)
        assert value(parsed, ":tensorflow:serving:request_count", model_name='we"ird\\name', status="OK") == 1
        assert abi.lib.get_metrics(None, ctypes.byref(out), ctypes.byref(size)) == 503
        abi.lib.free_buffer(out)
    finally:
        abi.finalize(handle)


def test_closed_processor_refuses_metrics(rec_model):
    p = processor.Processor(rec_model.config(poll_interval_seconds=0))
    p.close()
    with pytest.raises(processor.RequestError):
        p.metrics()
    assert processor.get_metrics(p)[0] == 503


def test_every_model_info_field_the_metrics_read_is_the_protos(rec_model):
    """The metrics read ServingModelInfo's fields by number (cpp/serving/metrics_exposition.cc): each
    field, set to its own value through the proto's own class, shows in its metric."""
    from processor import predict_pb2
    info = predict_pb2.ServingModelInfo(model_path="m", version_step=41, load_duration_ms=7, updates_applied=5,
                                        updates_failed=3, delta_step=43, savedmodel_version=2, pinned=True)
    with processor.Processor(rec_model.config(poll_interval_seconds=0)) as p:
        p._lifecycle.handle.set_model_info(info.SerializeToString())
        parsed = samples(p.metrics())
    m = {"model_name": "default"}
    assert value(parsed, ":tensorflow:serving:model_version", **m) == 41
    assert value(parsed, ":tensorflow:serving:load_latency", **m) == 7000
    assert value(parsed, ":tensorflow:serving:load_count", **m, status="success") == 6
    assert value(parsed, ":tensorflow:serving:load_count", **m, status="failure") == 3
    assert value(parsed, ":tensorflow:serving:model_delta_step", **m) == 43
    assert value(parsed, ":tensorflow:serving:savedmodel_version", **m) == 2
    assert value(parsed, ":tensorflow:serving:model_pinned", **m) == 1


def test_loaded_versions_counts_a_swap_and_returns(rec_model, tmp_path):
    """:processor:loaded_versions: the process's loaded versions, the same after a swap as before it
    (the old version is released once its requests have answered)."""
    from lifecycle_helpers import loaded_versions
    model = rec_model.copy(tmp_path)
    with processor.Processor(model.config(poll_interval_seconds=0)) as p:
        before = loaded_versions(p)
        assert before >= 1
        model.trainer.train(2, seed=3)
        model.trainer.save_checkpoint(model.checkpoint_dir)
        assert p.update()
        assert loaded_versions(p) == before
