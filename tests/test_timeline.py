"""Timeline: the chosen requests are traced into Chrome trace JSON files that name the graph's ops."""
from __future__ import annotations

import json
import os

import processor
from lifecycle_helpers import serialize


def test_chosen_steps_are_written_as_chrome_traces(rec_model, batch, tmp_path):
    path = tmp_path / "timelines"
    config = rec_model.config(timeline_start_step=2, timeline_interval_step=3, timeline_trace_count=2,
                              timeline_path=str(path), poll_interval_seconds=0)
    with processor.Processor(config) as p:
        request = serialize(batch)
        answers = [p.process(request) for _ in range(12)]
    assert all(code == 200 for code, _ in answers)
    assert len({body for _, body in answers}) == 1  # traced requests answer the same
    assert sorted(os.listdir(path)) == ["timeline-2.json", "timeline-5.json"]  # steps 2 and 5, then stop
    trace = json.loads((path / "timeline-2.json").read_text())
    ops = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    names = {e["args"]["name"] for e in ops}
    # the graph as TF ran it: Grappler/oneDNN fuse each dense layer's MatMul+BiasAdd+Relu into one op
    assert {"fc1/kernel", "fc2/kernel", "fc1/Relu", "fc2/Relu", "prob"} <= names, sorted(names)
    op_types = {e["name"] for e in ops}
    assert "Sigmoid" in op_types and any("MatMul" in op for op in op_types), op_types
    assert all(e["dur"] >= 0 and e["ts"] > 0 for e in ops)
    devices = [e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"]
    assert any("CPU" in d for d in devices)


def test_unwritable_timeline_path_is_a_config_error(rec_model, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    try:
        processor.Processor(rec_model.config(timeline_trace_count=1, timeline_path=str(blocker / "sub"),
                                             poll_interval_seconds=0))
    except processor.ConfigError as e:
        assert e.field == "timeline_path"
    else:
        raise AssertionError("expected a ConfigError")


def test_a_timeline_on_oss_is_uploaded_and_a_failed_upload_is_tried_again(oss_model, batch, tmp_path, caplog):
    """timeline_path oss://...: traces go to OSS, never to a local directory named "oss:"; an upload the
    server refuses stays staged and goes up at the next pass."""
    from oss_standin import BUCKET
    oss_model.server.inject("put", "timeline-0", "500", times=2)
    config = oss_model.config(timeline_start_step=0, timeline_interval_step=1, timeline_trace_count=2,
                              timeline_path=f"oss://{BUCKET}/traces")
    with processor.Processor(config) as p:
        request = serialize(batch)
        assert all(p.process(request)[0] == 200 for _ in range(3))
        uploaded = lambda: sorted(k for k in oss_model.server.keys(BUCKET) if k.startswith("traces/"))  # noqa: E731
        from lifecycle_helpers import wait_for
        wait_for(lambda: uploaded() == ["traces/timeline-0.json", "traces/timeline-1.json"], timeout=20,
                 what="both traces uploaded")
    assert "cannot upload timeline timeline-0.json" in caplog.text and "500 InternalError" in caplog.text
    assert not os.path.exists("oss:")
    json.loads(open(os.path.join(oss_model.server.root, BUCKET, "traces", "timeline-0.json")).read())


def test_traced_steps_of_concurrent_requests_take_turns(rec_model, batch, tmp_path):
    """TensorFlow's profiler traces one run at a time in a process: four threads whose requests are
    traced at once all answer 200 (a second trace used to fail with "Another profiling session
    active"), and every trace is written."""
    import threading
    path = tmp_path / "timelines"
    config = rec_model.config(timeline_start_step=1, timeline_interval_step=1, timeline_trace_count=8,
                              timeline_path=str(path), poll_interval_seconds=0)
    with processor.Processor(config) as p:
        request = serialize(batch)
        codes = []
        start = threading.Barrier(4)

        def client():
            start.wait()
            codes.extend(p.process(request)[0] for _ in range(4))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert codes == [200] * 16
    assert sorted(os.listdir(path)) == sorted(f"timeline-{step}.json" for step in range(1, 9))
