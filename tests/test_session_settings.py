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
from processor.version_loader import session_options

ROOT = Path(__file__).resolve().parents[1]


def config_proto(**settings):
    from tensorflow.core.protobuf import config_pb2
    options = session_options(parse_config({"savedmodel_dir": "/unused", **settings}))
    return config_pb2.ConfigProto.FromString(_core.session_config({"savedmodel_dir": "/unused", **options}))


def test_config_proto_carries_the_thread_settings():
    proto = config_proto(intra_op_parallelism_threads=3, inter_op_parallelism_threads=2, use_per_session_threads=True)
    assert (proto.intra_op_parallelism_threads, proto.inter_op_parallelism_threads) == (3, 2)
    assert proto.use_per_session_threads is True


def test_default_settings_leave_tensorflow_to_choose():
    from tensorflow.core.protobuf import config_pb2
    assert config_proto() == config_pb2.ConfigProto()


def test_inline_execute_means_negative_inter_op_threads():
    proto = config_proto(enable_inline_execute=True, intra_op_parallelism_threads=1)
    assert proto.inter_op_parallelism_threads == -1 and proto.intra_op_parallelism_threads == 1


def test_bad_load_option_is_refused():
    with pytest.raises(_core.LoadError, match="load option 'intra_op_threads' is not an integer: 'x'"):
        _core.session_config({"savedmodel_dir": "/unused", "intra_op_threads": "x"})


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


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


def test_per_session_threads_give_each_session_its_own_inter_op_pool(rec_model, batch):
    """On this TF build only the inter-op pool is per session; the intra-op pool stays process-wide."""
    started = {}
    for inter in (1, 4):
        before = thread_count()
        p = processor.Processor(rec_model.config(use_per_session_threads=True, inter_op_parallelism_threads=inter,
                                                 intra_op_parallelism_threads=5))
        p.predict(batch)
        started[inter] = thread_count() - before
        p.close()
        del p
    assert started[4] - started[1] == 4 - 1, started


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
