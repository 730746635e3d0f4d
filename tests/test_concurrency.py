"""process() from many threads at once gives exactly the sequential answers."""
from __future__ import annotations

import threading

import numpy as np

import processor
from processor import predict_pb2, tensors
import recommendation_model


import pytest


@pytest.mark.parametrize("group", [{}, {"session_num": 2, "select_session_policy": "RR"},
                                   {"session_num": 3, "select_session_policy": "MOD"}], ids=["one", "rr2", "mod3"])
def test_concurrent_process_equals_sequential(rec_model, group):
    rng = np.random.default_rng(11)
    requests = []
    for size in (1, 3, 17, 64, 128, 5, 2, 33):
        request = predict_pb2.PredictRequest()
        for name, value in recommendation_model.random_batch(size, rng).items():
            tensors.to_array_proto(np.asarray(value), request.inputs[name])
        requests.append(request.SerializeToString())
    requests.append(b"\x00bad")  # errors must be just as deterministic

    with processor.Processor(rec_model.config(**group)) as p:
        sequential = [p.process(r) for r in requests]
        assert [code for code, _ in sequential].count(200) == len(requests) - 1
        mismatches = []
        def worker(seed):
            order = np.random.default_rng(seed).permutation(len(requests))
            for _ in range(25):
                for i in order:
                    if p.process(requests[i]) != sequential[i]:
                        mismatches.append(i)
        threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert mismatches == []
