"""`python -m processor`: inspect, versions, warmup build (serve: test_rest_server.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import processor
import recommendation_model
from lifecycle_helpers import json_rows, serialize
from processor import predict_pb2, tensors
from processor.formats.tfrecord import iter_records
from processor.hosts.cli import main


def run(capsys, *argv) -> tuple:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_has_help():
    for command in ([], ["serve"], ["inspect"], ["versions"], ["warmup", "build"]):
        result = subprocess.run([sys.executable, "-m", "processor", *command, "--help"], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0 and result.stdout.startswith("usage: python -m processor"), result.stderr
    listed = subprocess.run([sys.executable, "-m", "processor", "--help"], capture_output=True, text=True).stdout
    assert all(name in listed for name in ("serve", "inspect", "versions", "warmup"))


@pytest.mark.parametrize("settings", [{}, {"session_num": 2, "inter_op_parallelism_threads": 3,
                                          "intra_op_parallelism_threads": 2, "model_update_inter_threads": 1},
                                      {"use_per_session_threads": True, "enable_inline_execute": True}])
def test_inspect_shows_the_sessions_threads_as_tensorflow_reads_them(rec_model, capsys, tmp_path, settings):
    """What inspect says of the session's threads is the ConfigProto the data plane gives TensorFlow,
    parsed here by TensorFlow's own config_pb2."""
    from tensorflow.core.protobuf import config_pb2
    from processor import _core
    from processor.config import parse_config
    from processor.loading.control import session_settings
    config = tmp_path / "config.json"
    config.write_text(json.dumps(rec_model.config(**settings)))
    code, out, _ = run(capsys, "inspect", "--json", "--config", str(config))
    threads = json.loads(out)["session_threads"]
    settings_message = session_settings(parse_config(rec_model.config(**settings)))
    proto = config_pb2.ConfigProto.FromString(_core.session_config(settings_message.SerializeToString()))
    pools = [{"threads": p.num_threads, "shared_as": p.global_name} for p in proto.session_inter_op_thread_pool]
    assert threads == {"intra_op_parallelism_threads": proto.intra_op_parallelism_threads,
                       "use_per_session_threads": proto.use_per_session_threads,
                       "enable_inline_execute": settings.get("enable_inline_execute", False),
                       "serving_pools": pools[:-1], "update_pool": pools[-1]}
    assert len(pools) == settings.get("session_num", 1) + 1


def test_inspect_shows_what_would_serve_and_the_signature(rec_model, capsys, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(rec_model.config()))
    code, out, _ = run(capsys, "inspect", "--config", str(config))
    assert code == 0
    assert f"would serve: {rec_model.prefixes()[-1]}" in out
    assert "input  user_id" in out and "DT_INT64" in out and "output prob" in out
    code, out, _ = run(capsys, "inspect", "--config", str(config), "--json")
    report = json.loads(out)
    with processor.Processor(rec_model.config(poll_interval_seconds=0)) as p:
        assert report["signatures"] == p.signatures()
        assert next(iter(report["signatures"].values())) == p.signature()
    assert report["would_serve"] == rec_model.prefixes()[-1]
    assert [v["step"] for v in report["versions"]["checkpoints"]] == [20]  # what the state file names


def test_inspect_says_why_nothing_would_serve(tmp_path, capsys):
    code, out, _ = run(capsys, "inspect", "--config", json.dumps({"savedmodel_dir": str(tmp_path / "none")}))
    assert code == 1 and "would serve: nothing: no SavedModel in savedmodel_dir" in out


def test_versions_lists_completeness(rec_model, tmp_path, capsys):
    model = rec_model.copy(tmp_path)
    older, newest = model.prefixes()
    state = os.path.join(model.checkpoint_dir, "checkpoint")
    with open(state, "w") as f:
        f.write(f'model_checkpoint_path: "{newest}"\nall_model_checkpoint_paths: "{older}"\n'
                f'all_model_checkpoint_paths: "{newest}"\n')
    os.rename(newest + ".data-00000-of-00001", newest + ".hidden")
    code, out, _ = run(capsys, "versions", "--config", json.dumps(model.config()))
    assert code == 0
    assert f"{older}  complete" in out
    assert f"{newest}  incomplete: no data shards {os.path.basename(newest)}.data-*-of-*" in out
    assert "Deltas after the newest complete checkpoint:\n  (none)" in out
    found = json.loads(run(capsys, "versions", "--config", json.dumps(model.config()), "--json")[1])
    assert [(v["step"], v["complete"]) for v in found["checkpoints"]] == [(10, True), (20, False)]


def test_warmup_build_from_a_request_log(rec_model, tmp_path, capsys):
    log = tmp_path / "requests.tfrecord"
    rng = np.random.default_rng(1)
    requests = [serialize(recommendation_model.random_batch(2, rng)) for _ in range(4)]
    with processor.Processor(rec_model.config(poll_interval_seconds=0, request_log={
            "path": str(log), "sample_rate": 1.0, "max_records": 3})) as p:
        for request in requests:
            p.process(request)
    output = tmp_path / "warmup.tfrecord"
    code, out, _ = run(capsys, "warmup", "build", "--output", str(output), "--from-log", f"{log}.1", str(log),
                       "--max-records", "3")
    assert code == 0 and "wrote 3 warmup request(s)" in out
    assert list(iter_records(str(output))) == requests[1:]
    with processor.Processor(rec_model.config(poll_interval_seconds=0, warmup_file_name=str(output))) as p:
        assert p.model_info().version_step == 20


def test_warmup_build_from_json_rows(rec_model, reference, tmp_path, capsys):
    batch = recommendation_model.random_batch(3, np.random.default_rng(2))
    rows = json_rows(batch)
    source = tmp_path / "rows.json"
    source.write_text(json.dumps([{"instances": rows}, {"instances": rows[:1]}]))
    output = tmp_path / "warmup.tfrecord"
    config = json.dumps(rec_model.config())
    code, out, _ = run(capsys, "warmup", "build", "--output", str(output), "--from-json", str(source), "--config", config)
    assert code == 0 and "wrote 2 warmup request(s)" in out
    first = list(iter_records(str(output)))[0]
    with processor.Processor(rec_model.config(poll_interval_seconds=0)) as p:
        code, body = p.process(first)
    assert code == 200
    prob = tensors.from_array_proto(predict_pb2.PredictResponse.FromString(body).outputs["prob"])
    np.testing.assert_allclose(prob, reference.predict(rec_model.prefixes()[-1], batch)["prob"], atol=1e-5)


@pytest.mark.parametrize("argv,message", [
    (["warmup", "build", "--output", "/tmp/x", "--from-json", "/tmp/rows.json"], "--from-json needs --config"),
    (["versions", "--config", "{\"savedmodel_dir\": 5}"], "config field 'savedmodel_dir': must be a string"),
])
def test_mistakes_are_one_line_errors(argv, message, capsys):
    code, _, err = run(capsys, *argv)
    assert code == 1 and err.startswith("error: ") and message in err
