"""DeepRec's own processor configs load unchanged and serve TensorFlow's outputs: the one of its end2end
test (serving/processor/tests/end2end/demo.cc), the one its documentation lists field by field
(docs/docs_en/Processor.md, "Configure file"), and the variants its reader accepts
(serving/processor/serving/model_config.cc). Only the paths (and the OSS endpoint and keys, which the
stand-in defines) are this machine's."""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

import processor
from lifecycle_helpers import serialize
from oss_standin import ACCESS_ID, ACCESS_KEY, BUCKET

# demo.cc's model_config, as its C string holds it.
DEMO_CONFIG = """{ \
    "omp_num_threads": 4, \
    "kmp_blocktime": 0, \
    "feature_store_type": "memory", \
    "serialize_protocol": "protobuf", \
    "inter_op_parallelism_threads": 10, \
    "intra_op_parallelism_threads": 10, \
    "init_timeout_minutes": 1, \
    "signature_name": "serving_default", \
    "read_thread_num": 3, \
    "update_thread_num": 2, \
    "model_store_type": "local", \
    "checkpoint_dir": "/tmp/ckpt/", \
    "savedmodel_dir": "/tmp/pb/" \
  } """

# Processor.md's configuration, every field it lists with the value it shows (its '#' comments dropped:
# they are not JSON, and jsoncpp would refuse them too).
DOCUMENTED_CONFIG = {
    "session_num": 2,
    "select_session_policy": "MOD",
    "use_per_session_threads": False,
    "cpusets": "123;4-6",
    "enable_inline_execute": False,
    "omp_num_threads": 4,
    "kmp_blocktime": 0,
    "feature_store_type": "local",
    "redis_url": "redis_url",
    "redis_password": "redis_password",
    "read_thread_num": 4,
    "update_thread_num": 1,
    "serialize_protocol": "protobuf",
    "inter_op_parallelism_threads": 10,
    "intra_op_parallelism_threads": 10,
    "model_update_inter_threads": 4,
    "model_update_intra_threads": 4,
    "init_timeout_minutes": 1,
    "signature_name": "serving_default",
    "warmup_file_name": "warm_up.bin",
    "model_store_type": "oss",
    "checkpoint_dir": "oss://mybucket/test/ckpt_parent_dir/",
    "savedmodel_dir": "oss://mybucket/test/savedmodel/1616466677/",
    "oss_endpoint": "oss_endpoint",
    "oss_access_id": "oss_access_id",
    "oss_access_key": "oss_access_key",
    "timeline_start_step": 1,
    "timeline_interval_step": 2,
    "timeline_trace_count": 3,
    "timeline_path": "oss://mybucket/timeline/",
    "ev_storage_type": 12,
    "ev_storage_path": "/ssd/1/",
    "ev_storage_size": [1024, 1024],
}


def assert_serves_tensorflows_outputs(p, reference, batch, prefix):
    np.testing.assert_allclose(p.predict(batch)["prob"], reference.predict(prefix, batch)["prob"], atol=1e-6)


def test_the_end2end_demo_config_loads_unchanged(rec_model, reference, batch):
    text = DEMO_CONFIG.replace("/tmp/ckpt/", rec_model.checkpoint_dir + "/").replace("/tmp/pb/",
                                                                                     rec_model.savedmodel_dir + "/")
    config = processor.parse_config(text)
    assert (config.feature_store_type, config.omp_num_threads, config.kmp_blocktime) == ("local", 4, 0)
    with processor.Processor(text) as p:
        assert_serves_tensorflows_outputs(p, reference, batch, rec_model.prefixes()[-1])


def test_the_documented_config_loads_unchanged_from_oss_and_uploads_its_timeline(oss_model, reference, batch,
                                                                                tmp_path, caplog, fresh_config_log):
    """Every field of Processor.md's list: the model from OSS, the timeline to OSS, the warmup file
    beside the SavedModel, cpusets logged as not honoured, ev_storage_type 12 with its sizes."""
    mapped = {"oss://mybucket/test/ckpt_parent_dir/": f"oss://{BUCKET}/rec/checkpoints/",
              "oss://mybucket/test/savedmodel/1616466677/": f"oss://{BUCKET}/rec/saved_model/",
              "oss://mybucket/timeline/": f"oss://{BUCKET}/timeline/",
              "oss_endpoint": oss_model.server.endpoint, "oss_access_id": ACCESS_ID, "oss_access_key": ACCESS_KEY}
    document = {key: mapped.get(value, value) if isinstance(value, str) and key != "redis_url" else value
                for key, value in DOCUMENTED_CONFIG.items()}
    oss_model.server.put(BUCKET, "rec/saved_model/warm_up.bin", serialize(batch))  # DeepRec's warmup format
    cache = tmp_path / "cache"
    document["local_cache_dir"] = str(cache)  # where this machine keeps downloads
    with caplog.at_level(logging.INFO):
        with processor.Processor(document) as p:
            config = p.config
            assert (config.session_num, config.ev_storage_type) == (2, "DRAM_SSDHASH")
            assert config.ev_storage_sizes == [1024, 1024, 2**30, 2**30] and config.not_honoured == ["cpusets"]
            request = serialize(batch)
            for _ in range(7):
                assert p.process(request)[0] == 200
            assert_serves_tensorflows_outputs(p, reference, batch, oss_model.local.prefixes()[-1])
    # warmup ran the one request before serving; steps 1, 3 and 5 are traced and uploaded, the rest not
    assert sorted(k for k in oss_model.server.keys(BUCKET) if k.startswith("timeline/")) == \
        ["timeline/timeline-1.json", "timeline/timeline-3.json", "timeline/timeline-5.json"]
    trace = json.loads(open(os.path.join(oss_model.server.root, BUCKET, "timeline", "timeline-3.json")).read())
    assert any(e["ph"] == "X" for e in trace["traceEvents"])
    assert os.listdir(cache / "timeline") == []  # uploaded, and the staging directory removed
    assert not os.path.exists("oss:") and not os.path.exists("oss:/")
    assert "not honouring config key cpusets: binding each session group pool to CPUs" in caplog.text


def test_cluster_redis_is_deeprecs_name_for_the_redis_store(rec_model, reference, batch, standalone):
    """feature_store_type "cluster_redis" with a password-less server and DeepRec's required password
    field empty; every gathered-only variable is served from Redis, as DeepRec moves every embedding."""
    config = rec_model.config(feature_store_type="cluster_redis", redis_url=standalone.address, redis_password="",
                              feature_store_namespace="deeprec-cluster-redis", poll_interval_seconds=0)
    with processor.Processor(config) as p:
        assert p.config.feature_store_type == "redis"
        assert_serves_tensorflows_outputs(p, reference, batch, rec_model.prefixes()[-1])


def test_a_shard_embedding_config_serves_its_names_from_the_local_store(rec_model, reference, batch, caplog,
                                                                       fresh_config_log):
    """model_config.cc's shard_embedding: names as one "a;b" string, shard_instance_count and id_type."""
    config = rec_model.config(shard_embedding=True, embedding_names="user_embedding;item_embedding",
                              shard_instance_count=2, id_type="int64", poll_interval_seconds=0)
    with caplog.at_level(logging.WARNING):
        with processor.Processor(config) as p:
            assert p.config.embedding_names == ["user_embedding", "item_embedding"] and p.config.uses_feature_store
            assert_serves_tensorflows_outputs(p, reference, batch, rec_model.prefixes()[-1])
    assert "shard_embedding: every instance serves every row of user_embedding, item_embedding" in caplog.text


@pytest.mark.parametrize("overrides", [
    {"omp_num_threads": "4", "kmp_blocktime": "0"},
    {"init_timeout_minutes": -1},
    {"enable_inline_execute": True, "inter_op_parallelism_threads": 4},
    {"ev_storage_type": 12, "ev_storage_size": [2**33, 2**34], "ev_storage_path": "/ssd/1/"},
    {"ev_storage_type": 0},
    {"ev_storage_type": 1},
    {"checkpoint_dir": None},
    {"lock_timeout": 900, "use_multi_stream": False, "gpu_ids_list": ""},
], ids=lambda o: ",".join(o))
def test_what_deeprecs_reader_accepts_loads_and_serves(rec_model, reference, batch, overrides):
    config = {**rec_model.config(poll_interval_seconds=0), **overrides}
    with processor.Processor(config) as p:
        # without a checkpoint_dir (null is absent), the SavedModel's own variables serve
        prefix = rec_model.prefixes()[-1] if config.get("checkpoint_dir") else \
            os.path.join(rec_model.savedmodel_dir, "variables", "variables")
        assert_serves_tensorflows_outputs(p, reference, batch, prefix)


def test_model_entry_is_put_before_the_warmup_file_name_as_deeprec_does(rec_model, batch, tmp_path):
    """model_serving.cc: warmup_file_name = model_entry + warmup_file_name."""
    (tmp_path / "entry").mkdir()
    (tmp_path / "entry" / "warm_up.bin").write_bytes(serialize(batch))
    config = rec_model.config(warmup_file_name="warm_up.bin", poll_interval_seconds=0)
    handle, state = processor.initialize(str(tmp_path / "entry") + "/", json.dumps(config))
    assert state == 0 and handle.config.warmup_file_name == str(tmp_path / "entry" / "warm_up.bin")
    handle.close()
    with pytest.raises(processor.ModelLoadError, match="elsewhere/warm_up.bin"):
        processor.Processor(config, model_entry=str(tmp_path / "elsewhere") + "/")
