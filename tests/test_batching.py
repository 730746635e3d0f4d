"""enable_batching: concurrent requests merged along dimension 0 into one run (cpp/batching/). Each
caller must get exactly the rows TensorFlow gives for its own request: for the example model (every
output compared with TensorFlow's), for every protocol dtype and mixed row shapes, with one member's
bad data, a model that looks across rows, a version swap mid-stream, and a full queue.

Merges are made certain rather than hoped for: a batch_timeout_micros leader waits until the batch
holds every thread's rows (max_batch_size = their sum), or a slow request holds the one run slot
while the others queue; the batching metrics then say how many runs merged."""
from __future__ import annotations

import os
import re
import threading
import time

import numpy as np
import pytest

import processor
from lifecycle_helpers import matching_version, prob_of, serialize, wait_for
from model_builders import ECHO_DTYPES, build_counting_model, build_lookup_model, save_predict_signature

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def batching_metrics(p) -> dict:
    """':processor:batch_*' samples without the model label: name{other labels} -> value."""
    values = {}
    for line in p.metrics().splitlines():
        if line.startswith(":processor:batch"):
            name, value = line.rsplit(" ", 1)
            values[re.sub(r'model_name="[^"]*",?', "", name).replace("{}", "")] = float(value)
    return values


def merged(max_batch_size: int, **more) -> dict:
    """A config fragment whose first request waits (up to 20 s) until max_batch_size rows are queued."""
    return {"enable_batching": True, "batching_parameters": {
        "max_batch_size": max_batch_size, "batch_timeout_micros": 20_000_000, "num_batch_threads": 1, **more}}


def at_once(requests: list, send) -> list:
    """send(request) for every request, each from its own thread, started together; their results."""
    results = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def run(i):
        start.wait()
        try:
            results[i] = send(requests[i])
        except Exception as e:  # noqa: BLE001 - reported as the result
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def rows_of(batch: dict, first: int, count: int) -> dict:
    return {name: value[first:first + count] for name, value in batch.items()}


@pytest.mark.parametrize("embeddings", [{}, {"feature_store_type": "local", "embedding_min_rows": 1000}, "redis"],
                         ids=["in the session", "local tables", "redis"])
def test_merged_requests_each_get_tensorflows_rows(rec_model, reference, embeddings, request, tmp_path):
    """Eight requests of 1..8 rows merge into one run of 36; every output of each equals TensorFlow's
    for that request alone, with the embeddings in the session or in the feature store's tables (in
    this process, or in a real redis-server)."""
    if embeddings == "redis":
        embeddings = {"feature_store_type": "redis", "redis_url": request.getfixturevalue("standalone").address,
                      "feature_store_namespace": f"batching-{tmp_path.name}"}
    import recommendation_model
    batch = recommendation_model.random_batch(36, np.random.default_rng(7))
    sizes = list(range(1, 9))
    firsts = np.cumsum([0] + sizes[:-1])
    requests = [rows_of(batch, int(first), size) for first, size in zip(firsts, sizes)]
    prefix = rec_model.prefixes()[-1]
    with processor.Processor(rec_model.config(poll_interval_seconds=0, **merged(36), **embeddings)) as p:
        results = at_once(requests, p.predict)
        for request, result in zip(requests, results):
            assert not isinstance(result, Exception), result
            expected = reference.predict(prefix, request)
            assert set(result) == set(expected)
            for name in expected:
                np.testing.assert_allclose(result[name], expected[name], atol=1e-6, err_msg=name)
        metrics = batching_metrics(p)
    assert metrics[':processor:batch_runs{kind="merged"}'] == 1
    assert metrics[":processor:batch_size_sum"] == 36 and metrics[":processor:batch_size_count"] == 1


def test_a_merged_run_is_padded_to_an_allowed_batch_size(rec_model, reference):
    """allowed_batch_sizes [4, 8]: three requests of one row run as a batch of 4 (the last row again),
    and each gets TensorFlow's output for its own row."""
    import recommendation_model
    batch = recommendation_model.random_batch(3, np.random.default_rng(5))
    requests = [rows_of(batch, i, 1) for i in range(3)]
    config = rec_model.config(poll_interval_seconds=0, **merged(8, allowed_batch_sizes=[4, 8]))
    config["batching_parameters"]["batch_timeout_micros"] = 300_000  # the batch never fills: 3 rows of 8
    with processor.Processor(config) as p:
        results = at_once(requests, p.predict)
        metrics = batching_metrics(p)
    expected = reference.predict(rec_model.prefixes()[-1], batch)
    for i, result in enumerate(results):
        np.testing.assert_allclose(result["prob"], expected["prob"][i:i + 1], atol=1e-6)
    assert metrics[':processor:batch_runs{kind="merged"}'] == 1
    assert metrics[":processor:batch_size_sum"] == 4


def test_adaptive_batching_under_many_threads_stays_exact(rec_model, reference):
    """The default mode (no timer) with 12 threads sending 1..5 rows each, 60 times: every answer is
    its own rows of TensorFlow's output for the whole batch, and runs did merge."""
    import recommendation_model
    batch = recommendation_model.random_batch(200, np.random.default_rng(3))
    expected = reference.predict(rec_model.prefixes()[-1], batch)
    wrong = []
    config = rec_model.config(poll_interval_seconds=0, enable_batching=True,
                              batching_parameters={"num_batch_threads": 1})
    with processor.Processor(config) as p:
        def client(seed):
            rng = np.random.default_rng(seed)
            for _ in range(60):
                first, count = int(rng.integers(0, 195)), int(rng.integers(1, 6))
                code, body = p.process(serialize(rows_of(batch, first, count)))
                if code != 200 or not np.allclose(prob_of(body), expected["prob"][first:first + count], atol=1e-6):
                    wrong.append((seed, first, count, code))

        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = batching_metrics(p)
    assert wrong == []
    assert metrics[':processor:batch_runs{kind="merged"}'] > 0
    assert metrics[":processor:batch_queuing_delay_microseconds_count"] == 12 * 60


def test_traced_requests_run_alone_and_are_written_while_others_merge(rec_model, batch, tmp_path):
    """The timeline traces steps 1-3 while six threads send requests on one run slot: every answer is
    the same, the traces are written, and the untraced requests merged."""
    path = tmp_path / "timelines"
    config = rec_model.config(poll_interval_seconds=0, timeline_start_step=1, timeline_interval_step=1,
                              timeline_trace_count=3, timeline_path=str(path), enable_batching=True,
                              batching_parameters={"num_batch_threads": 1})
    with processor.Processor(config) as p:
        request = serialize(batch)
        expected = p.process(request)
        answers = at_once([request] * 6, lambda r: [p.process(r) for _ in range(20)])
        merged_runs = batching_metrics(p)[':processor:batch_runs{kind="merged"}']
    assert expected[0] == 200
    failed = [(code, body[:300]) for thread in answers for code, body in thread if code != 200]
    assert failed == []
    for thread in answers:  # a merged run's matmuls may round otherwise than a lone one's
        for _, body in thread:
            np.testing.assert_allclose(prob_of(body), prob_of(expected[1]), rtol=0, atol=1e-6)
    assert sorted(os.listdir(path)) == ["timeline-1.json", "timeline-2.json", "timeline-3.json"]
    assert merged_runs > 0


def echo_request(rows: int, width: int, seed: int) -> dict:
    """Every dtype of the echo model as [rows, width] (strings longer than TString's inline 22 bytes
    included), the values telling requests apart."""
    rng = np.random.default_rng(seed)
    request = {}
    for alias, (_, dtype, samples) in ECHO_DTYPES.items():
        picks = rng.integers(0, len(samples), size=(rows, width))
        if dtype is object:
            values = np.array([[samples[k] + f"-{seed}-{i}-{j}-".encode() * 3 for j, k in enumerate(row)]
                               for i, row in enumerate(picks)], dtype=object)
        else:
            values = np.array(samples, dtype=dtype)[picks]
        request[alias] = values
    return request


def test_every_dtype_and_row_shape_comes_back_exactly(echo_model):
    """Requests of [n, 2] and of [n, 3] for every protocol dtype arrive together: each row shape merges
    with its own kind only, and each caller gets its own values back bit for bit, strings on the heap
    included; a request whose inputs disagree in rows runs alone."""
    requests = [echo_request(rows, width, seed) for seed, (rows, width) in
                enumerate([(1, 2), (3, 3), (2, 2), (1, 3), (4, 2), (2, 3)])]
    uneven = echo_request(2, 2, 99)
    uneven["int8"] = uneven["int8"][:1]
    config = {"savedmodel_dir": echo_model, **merged(7)}  # each width's rows: 7 and 6 (the timer ends that)
    config["batching_parameters"]["batch_timeout_micros"] = 300_000
    with processor.Processor(config) as p:
        results = at_once(requests + [uneven], p.predict)
        metrics = batching_metrics(p)
    for request, result in zip(requests + [uneven], results):
        assert not isinstance(result, Exception), result
        for alias, value in request.items():
            assert result[alias].shape == value.shape, alias
            if value.dtype == object:
                assert result[alias].tolist() == value.tolist(), alias
            else:
                np.testing.assert_array_equal(result[alias], value, err_msg=alias)
    assert metrics[':processor:batch_runs{kind="merged"}'] >= 2
    assert metrics[":processor:batch_size_sum"] == 13  # the uneven request never entered a batch


def test_one_requests_bad_ids_fail_only_that_request(tmp_path):
    """A merged run fails on one member's ids (out of the table's range): every member runs again
    alone, the bad one answers 400 with TensorFlow's message and the others their rows."""
    ids = [np.array([0, 5]), np.array([7]), np.array([1000, 3]), np.array([99, 98, 1])]
    rows = build_lookup_model(str(tmp_path / "lookup"), rows=100, dim=4, sample_ids=np.arange(100))
    config = {"savedmodel_dir": str(tmp_path / "lookup"), **merged(8)}
    with processor.Processor(config) as p:
        results = at_once([{"ids": i} for i in ids], p.predict)
        metrics = batching_metrics(p)
    for request, result in zip(ids, results):
        if 1000 in request:
            assert isinstance(result, processor.RequestError) and result.code == 400, result
            assert "1000 is not in [0, 100)" in str(result)
        else:
            np.testing.assert_array_equal(result["rows"], rows[request])
    assert metrics[":processor:batch_reruns"] == 4


def build_listwise_model(path: str) -> str:
    """A signature of unknown rank whose output sums its request's rows (a listwise score): merged,
    its output would mix requests."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, None, name="x")
        total = tf.identity(tf.reduce_sum(x, axis=0, keepdims=True), name="total")
        with tf1.Session(graph=graph) as session:
            save_predict_signature(session, path, {"x": x}, {"total": total})
    return path


def test_a_model_that_sums_across_rows_is_never_answered_merged(tmp_path, capfd):
    """The first merged run's output has 1 row for 9: nothing of it is answered, each request runs
    alone (its own sum), the log says batching is off for the version, and later requests never merge."""
    model = build_listwise_model(str(tmp_path / "listwise"))
    requests = [{"x": np.arange(n, dtype=np.float32) + 10 * n} for n in (2, 3, 4)]
    with processor.Processor({"savedmodel_dir": model, **merged(9)}) as p:
        first = at_once(requests, p.predict)
        runs = batching_metrics(p)[':processor:batch_runs{kind="all"}']
        again = at_once(requests, p.predict)
        assert batching_metrics(p)[':processor:batch_runs{kind="all"}'] == runs
    for request, a, b in zip(requests, first, again):
        assert a["total"].tolist() == b["total"].tolist() == [request["x"].sum()]
    assert re.search(r"batching turned off for this model version: output 0 of a merged run of 9 rows has 1 rows",
                     capfd.readouterr().err)


def test_a_signature_without_a_batch_dimension_is_served_unbatched(tmp_path, capfd):
    model = build_counting_model(str(tmp_path / "counting"), tag=3)
    with processor.Processor({"savedmodel_dir": model, "enable_batching": True}) as p:
        assert p.predict({"n": np.int64(5)})["count"] == 5
        assert batching_metrics(p) == {}
    assert "enable_batching: signature 'serving_default' is served unbatched: input 'n' has no batch dimension " \
        "(shape [];" in capfd.readouterr().err


def build_slow_model(path: str) -> str:
    """n: [batch] int64 -> each row counts to max(n) in a while loop: a request as slow as asked."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        n = tf1.placeholder(tf.int64, [None], name="n")
        count = tf.while_loop(lambda i: i < tf.reduce_max(n), lambda i: i + 1, [tf.constant(0, tf.int64)])[0]
        tf.identity(n * 0 + count, name="count")
        with tf1.Session(graph=graph) as session:
            save_predict_signature(session, path, {"n": n}, {"count": graph.get_tensor_by_name("count:0")})
    return path


def test_a_full_queue_answers_503_at_once_and_the_model_serves_on(tmp_path):
    """One run slot held by a slow request, a queue of one row: the second request queues, the third
    is answered 503 with a message before the slow one ends; then everything is served."""
    model = build_slow_model(str(tmp_path / "slow"))
    config = {"savedmodel_dir": model, "enable_batching": True,
              "batching_parameters": {"max_batch_size": 1, "max_enqueued_batches": 1, "num_batch_threads": 1}}
    with processor.Processor(config) as p:
        slow = {}
        slow_thread = threading.Thread(target=lambda: slow.setdefault("out", p.predict({"n": np.array([500_000])})))
        slow_thread.start()
        wait_for(lambda: batching_metrics(p).get(":processor:batch_size_count", 0) == 1, what="the slow run")
        queued = {}
        queued_thread = threading.Thread(target=lambda: queued.setdefault("out", p.predict({"n": np.array([2])})))
        queued_thread.start()
        wait_for(lambda: batching_metrics(p).get(":processor:batch_queued_rows") == 1, what="the second request to queue")
        with pytest.raises(processor.RequestError) as refused:
            p.predict({"n": np.array([1])})
        assert slow_thread.is_alive(), "the 503 waited for the slow run"
        assert refused.value.code == 503
        assert "the batching queue is full: 1 rows wait for 1 run(s) in flight (max_enqueued_batches 1 x " \
               "max_batch_size 1); retry later" in str(refused.value)
        slow_thread.join()
        queued_thread.join()
        assert slow["out"]["count"].tolist() == [500_000] and queued["out"]["count"].tolist() == [2]
        assert p.predict({"n": np.array([4])})["count"].tolist() == [4]
        assert batching_metrics(p)[":processor:batch_rejections"] == 1


def test_a_version_swap_mid_stream_answers_each_batch_from_one_version(rec_model, reference, tmp_path):
    """Six threads stream requests while a new version is written and served: every answer is exactly
    one version's TensorFlow output for its rows, and both versions answered."""
    import recommendation_model
    model = rec_model.copy(tmp_path)
    batch = recommendation_model.random_batch(60, np.random.default_rng(11))
    old_prefix = model.prefixes()[-1]
    with processor.Processor(model.config(poll_interval_seconds=0.05, enable_batching=True,
                                          batching_parameters={"num_batch_threads": 1})) as p:
        answers, failures, stop = [], [], threading.Event()

        def client(seed):
            rng = np.random.default_rng(seed)
            while not stop.is_set():
                first, count = int(rng.integers(0, 55)), int(rng.integers(1, 6))
                code, body = p.process(serialize(rows_of(batch, first, count)))
                (answers if code == 200 else failures).append((first, count, body if code == 200 else code))

        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(6)]
        for t in threads:
            t.start()
        try:
            model.trainer.train(3, seed=5)
            new_prefix = model.trainer.save_checkpoint(model.checkpoint_dir)
            wait_for(lambda: p.model_info().model_path == new_prefix, what="the new version")
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join()
        merged_runs = batching_metrics(p)[':processor:batch_runs{kind="merged"}']
    references = [reference.predict(prefix, batch)["prob"] for prefix in (old_prefix, new_prefix)]
    versions = [matching_version(prob_of(body), [r[first:first + count] for r in references])
                for first, count, body in answers]
    assert failures == []
    assert -1 not in versions
    assert set(versions) == {0, 1}
    assert merged_runs > 0
