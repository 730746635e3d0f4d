"""Request logging: a sample of the requests answered 200, as a TFRecord of PredictRequests that rotates
by size and serves as a warmup file as it is."""
from __future__ import annotations

import numpy as np
import pytest

import processor
import recommendation_model
from lifecycle_helpers import serialize
from processor.formats.tfrecord import iter_records


def test_logged_requests_rotate_and_are_a_warmup_file(rec_model, tmp_path):
    log = tmp_path / "logs" / "requests.tfrecord"
    rng = np.random.default_rng(3)
    requests = [serialize(recommendation_model.random_batch(n + 1, rng)) for n in range(12)]
    config = rec_model.config(poll_interval_seconds=0, request_log={
        "path": str(log), "sample_rate": 1.0, "max_records": 5, "backups": 2})
    with processor.Processor(config) as p:
        for request in requests:
            assert p.process(request)[0] == 200
        assert p.process(b"\x12\x03bad")[0] == 400   # failed requests are not logged
        assert p.process(b"")[0] == 200              # nor the signature query
    assert list(iter_records(f"{log}.2")) == requests[0:5]
    assert list(iter_records(f"{log}.1")) == requests[5:10]
    assert list(iter_records(str(log))) == requests[10:12]
    # a log is a warmup file: a new version runs its requests before it serves
    with processor.Processor(rec_model.config(poll_interval_seconds=0, warmup_file_name=f"{log}.1")) as p:
        assert p.model_info().model_path == rec_model.prefixes()[-1]


def test_sample_rate_logs_that_fraction(rec_model, tmp_path, batch):
    log = tmp_path / "requests.tfrecord"
    request = serialize(batch)
    with processor.Processor(rec_model.config(poll_interval_seconds=0, request_log={
            "path": str(log), "sample_rate": 0.25})) as p:
        for _ in range(2000):
            p.process(request)
    logged = list(iter_records(str(log)))
    assert 400 <= len(logged) <= 600, len(logged)  # binomial(2000, 0.25): mean 500, sd 19
    assert set(logged) == {request}


def test_an_unwritable_log_path_is_a_config_error(rec_model, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(processor.ConfigError) as error:
        processor.Processor(rec_model.config(request_log={"path": str(blocker / "log.tfrecord")}))
    assert error.value.field == "request_log.path"
