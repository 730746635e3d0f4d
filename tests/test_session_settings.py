"""Thread settings reach TensorFlow: the session's ConfigProto, and the thread pools it really creates."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import processor
from processor import _core
from processor.config import parse_config
from processor.loading.control import session_settings

ROOT = Path(__file__).resolve().parents[1]


def config_proto(**settings):
    from tensorflow.core.protobuf import config_pb2
    settings_message = session_settings(parse_config({"savedmodel_dir": "/unused", **settings}))
    return config_pb2.ConfigProto.FromString(_core.session_config(settings_message.SerializeToString()))


def pools(proto):
    return [(pool.num_threads, pool.global_name) for pool in proto.session_inter_op_thread_pool]


def test_config_proto_carries_the_thread_settings():
    proto = config_proto(intra_op_parallelism_threads=3, inter_op_parallelism_threads=2, use_per_session_threads=True,
                         model_update_inter_threads=4)
    assert proto.intra_op_parallelism_threads == 3 and proto.use_per_session_threads is True
    # pool 0 serves (unnamed: the session's own), pool 1 loads (shared by every load in the process)
    assert pools(proto) == [(2, ""), (4, "processor_update_4")]


def test_default_settings_leave_sizes_to_tensorflow_and_separate_loads_from_serving():
    proto = config_proto()
    assert proto.intra_op_parallelism_threads == 0 and not proto.use_per_session_threads
    assert pools(proto) == [(0, "processor_serving_0_0"), (0, "processor_update_0")]


def test_session_group_is_one_pool_per_session_in_one_session():
    proto = config_proto(session_num=3, inter_op_parallelism_threads=2, select_session_policy="RR")
    assert pools(proto) == [(2, "processor_serving_2_0"), (2, "processor_serving_2_1"), (2, "processor_serving_2_2"),
                            (0, "processor_update_0")]


def test_session_group_pools_are_real_threads(rec_model):
    one = threads_started_by_first_session(rec_model.config(session_num=1, inter_op_parallelism_threads=2))
    three = threads_started_by_first_session(rec_model.config(session_num=3, inter_op_parallelism_threads=2))
    assert three - one == 2 * 2  # two more pools of two threads


def test_bad_settings_are_refused_by_the_data_plane_too():
    from processor import control_pb2
    with pytest.raises(_core.LoadError, match="select_session_policy is 'LRU', not MOD or RR"):
        _core.session_config(control_pb2.SessionSettings(select_session_policy="LRU").SerializeToString())
    with pytest.raises(_core.LoadError, match="session_num must be >= 1"):
        _core.session_config(control_pb2.SessionSettings(session_num=-2).SerializeToString())


THREADS_PROBE = """
import json, os, sys
import numpy as np, processor, recommendation_model
base = len(os.listdir("/proc/self/task"))
p = processor.Processor(json.loads(sys.argv[1]))
p.predict(recommendation_model.random_batch(64, np.random.default_rng(0)))
print(len(os.listdir("/proc/self/task")) - base)
"""


def threads_started_by_first_session(config: dict) -> int:
    result = subprocess.run([sys.executable, "-c", THREADS_PROBE, json.dumps(config)], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT / "examples")})
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


def test_process_wide_pools_take_the_first_sessions_sizes(rec_model):
    """The first session of a process creates TF's shared intra- and inter-op pools with its sizes."""
    small = threads_started_by_first_session(rec_model.config(intra_op_parallelism_threads=1,
                                                              inter_op_parallelism_threads=1))
    large = threads_started_by_first_session(rec_model.config(intra_op_parallelism_threads=4,
                                                              inter_op_parallelism_threads=3))
    assert large - small == (4 - 1) + (3 - 1)


def test_loads_run_on_their_own_pool_of_the_configured_size(rec_model):
    """The update pool is real: its size adds threads to the process, apart from the serving pool's."""
    one = threads_started_by_first_session(rec_model.config(model_update_inter_threads=1))
    four = threads_started_by_first_session(rec_model.config(model_update_inter_threads=4))
    assert four - one == 4 - 1


def test_per_session_threads_give_the_session_an_inter_op_pool_of_the_configured_size(rec_model):
    one = threads_started_by_first_session(rec_model.config(use_per_session_threads=True, inter_op_parallelism_threads=1))
    four = threads_started_by_first_session(rec_model.config(use_per_session_threads=True, inter_op_parallelism_threads=4))
    assert four - one == 4 - 1


def test_table_initializers_run_without_a_main_op(tmp_path, batch, reference):
    """A SavedModel whose only record of its tables is the table_initializer collection still serves."""
    import recommendation_model
    model = recommendation_model.RecommendationModel()
    model.train(3)
    savedmodel = model.export_savedmodel(str(tmp_path / "saved_model"), with_main_op=False)
    expected = model.predict(batch)
    model.close()
    with processor.Processor({"savedmodel_dir": savedmodel}) as p:
        outputs = p.predict(batch)
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name], value, atol=1e-5, err_msg=name)


def test_openmp_settings_are_exported_unless_the_host_set_them(monkeypatch):
    from processor.session_group import apply_openmp_settings
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("KMP_BLOCKTIME", "7")
    applied = apply_openmp_settings(parse_config({"savedmodel_dir": "/x", "omp_num_threads": 3, "kmp_blocktime": 0}))
    assert applied == {"OMP_NUM_THREADS": "3"}
    assert os.environ["OMP_NUM_THREADS"] == "3" and os.environ["KMP_BLOCKTIME"] == "7"
