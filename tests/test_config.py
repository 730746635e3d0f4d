"""The JSON config: defaults, every wrong value named by its field, unknown keys warned about."""
from __future__ import annotations

import dataclasses
import json
import logging

import pytest

import processor
from processor.config import ProcessorConfig, parse_config

BASE = {"savedmodel_dir": "/models/sm"}


def test_defaults_are_documented_values():
    config = parse_config(BASE)
    assert config == ProcessorConfig(savedmodel_dir="/models/sm")
    assert (config.session_num, config.select_session_policy, config.signature_name) == (1, "MOD", "serving_default")
    assert (config.feature_store_type, config.model_store_type, config.serialize_protocol) == ("local", "local", "protobuf")
    assert (config.read_thread_num, config.update_thread_num) == (4, 2)  # DeepRec's defaults
    assert (config.inter_op_parallelism_threads, config.intra_op_parallelism_threads) == (0, 0)
    assert config.checkpoint_dir == "" and config.unknown_keys == []


def test_every_deeprec_field_is_parsed():
    full = {
        "savedmodel_dir": "oss://bucket/m/sm", "checkpoint_dir": "oss://bucket/m/ckpt", "session_num": 2, "select_session_policy": "RR",
        "use_per_session_threads": True, "enable_inline_execute": False, "omp_num_threads": 4,
        "kmp_blocktime": 0, "feature_store_type": "redis", "redis_url": "127.0.0.1:6379",
        "redis_password": "pw", "read_thread_num": 2, "update_thread_num": 3, "serialize_protocol": "protobuf",
        "inter_op_parallelism_threads": 2, "intra_op_parallelism_threads": 3, "model_update_inter_threads": 1,
        "model_update_intra_threads": 1, "init_timeout_minutes": 1.5, "signature_name": "sig",
        "warmup_file_name": "/m/warmup.bin", "model_store_type": "oss", "oss_endpoint": "oss.example",
        "oss_access_id": "id", "oss_access_key": "key", "timeline_start_step": 10,
        "timeline_interval_step": 5, "timeline_trace_count": 2, "timeline_path": "/tmp/tl",
        "ev_storage_type": "DRAM_SSDHASH", "ev_storage_path": "/ssd", "ev_storage_size": [1024, 2048],
        "shard_embedding": False, "shard_instance_count": 2, "id_type": "int64",
    }
    config = parse_config(full)
    for name, value in full.items():
        assert getattr(config, name) == value, name
    processor_additions = {"warmup_iterations", "poll_interval_seconds", "version_policy", "rollback_keep", "model_name",
                           "max_request_bytes", "max_tensor_elements", "local_cache_dir", "download_threads",
                           "download_retries", "webhdfs_url", "hdfs_user", "request_log", "embedding_names",
                           "embedding_min_rows", "embedding_default_value", "feature_store_namespace",
                           "feature_store_partitions", "feature_store_cache_bytes", "monolith_tables", "layout_filters",
                           "strict_signature_name", "enable_batching", "batching_parameters", "savedmodel_version",
                           "enable_model_warmup", "saved_model_tags"}
    assert set(full) | processor_additions == \
        {f.name for f in dataclasses.fields(ProcessorConfig)} - {"unknown_keys", "not_honoured"}


def test_poll_interval_defaults_by_store():
    assert parse_config(BASE).effective_poll_interval == 5.0
    assert parse_config({**BASE, "poll_interval_seconds": 0}).effective_poll_interval == 0.0
    remote = parse_config({"savedmodel_dir": "oss://b/sm", "model_store_type": "oss", "oss_endpoint": "e",
                           "oss_access_id": "i", "oss_access_key": "k"})
    assert remote.effective_poll_interval == 60.0


def test_json_string_file_path_and_bytes(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**BASE, "session_num": 3}))
    for source in (json.dumps({**BASE, "session_num": 3}), str(path), path, json.dumps({**BASE, "session_num": 3}).encode()):
        assert parse_config(source).session_num == 3


OSS = {"savedmodel_dir": "oss://bucket/sm", "model_store_type": "oss", "oss_endpoint": "e", "oss_access_id": "i",
       "oss_access_key": "k"}

BAD_CONFIGS = [
    ({}, "savedmodel_dir", "is required"),
    ({"savedmodel_dir": 5}, "savedmodel_dir", "must be a string, got int 5"),
    ({"savedmodel_dir": "  "}, "savedmodel_dir", "must not be empty"),
    ({**BASE, "session_num": "2"}, "session_num", 'must be an integer, got str "2"'),
    ({**BASE, "session_num": 0}, "session_num", "must be >= 1, got 0"),
    ({**BASE, "session_num": True}, "session_num", "must be an integer, got boolean true"),
    ({**BASE, "session_num": 1.5}, "session_num", "must be an integer"),
    ({**BASE, "select_session_policy": "RANDOM"}, "select_session_policy", "must be one of 'MOD', 'RR'"),
    ({**BASE, "use_per_session_threads": "1"}, "use_per_session_threads", "must be true or false"),
    ({**BASE, "enable_inline_execute": "yes"}, "enable_inline_execute", "must be true or false"),
    ({**BASE, "intra_op_parallelism_threads": -1}, "intra_op_parallelism_threads", "must be >= 0"),
    ({**BASE, "inter_op_parallelism_threads": 2**40}, "inter_op_parallelism_threads", "must be < 2^31"),
    ({**BASE, "feature_store_type": "memcache"}, "feature_store_type", "must be one of 'local', 'redis'"),
    ({**BASE, "feature_store_type": "redis"}, "redis_url", "is required when feature_store_type is 'redis'"),
    ({**BASE, "embedding_names": 5}, "embedding_names", "must be a list of variable names"),
    ({**BASE, "embedding_names": ["a", ""]}, "embedding_names[1]", "must be a variable name"),
    ({**BASE, "embedding_min_rows": -1}, "embedding_min_rows", "must be >= 0"),
    ({**BASE, "embedding_default_value": float("nan")}, "embedding_default_value", "must be a finite number"),
    ({**BASE, "feature_store_partitions": 0}, "feature_store_partitions", "must be >= 1"),
    ({**BASE, "monolith_tables": {"v": "/d/t\nx"}}, "monolith_tables.v", "must be <directory>/<table name>"),
    ({**BASE, "monolith_tables": {"v": "t"}}, "monolith_tables.v", "must be <directory>/<table name>"),
    ({**BASE, "layout_filters": ["ps_{i}; __import__('os')"]}, "layout_filters[0]", "not allowed"),
    ({**BASE, "model_store_type": "s3"}, "model_store_type", "must be one of 'local', 'oss', 'hdfs'"),
    ({**BASE, "model_store_type": "oss"}, "oss_endpoint", "is required when model_store_type is 'oss' (or set OSS_ENDPOINT)"),
    ({**OSS, "oss_access_key": ""}, "oss_access_key", "is required when model_store_type is 'oss' (or set OSS_ACCESS_KEY_SECRET)"),
    ({**OSS, "savedmodel_dir": "/models/sm"}, "savedmodel_dir", "must start with oss:// when model_store_type is 'oss'"),
    ({**OSS, "checkpoint_dir": "hdfs://nn/ckpt"}, "checkpoint_dir", "must start with oss:// when model_store_type is 'oss'"),
    ({**OSS, "savedmodel_dir": "oss:///sm"}, "savedmodel_dir", "must name a bucket: oss://bucket/path"),
    ({**BASE, "checkpoint_dir": "oss://b/ckpt"}, "checkpoint_dir", "starts with oss:// but model_store_type is 'local': set it to 'oss'"),
    ({"savedmodel_dir": "hdfs://nn/sm"}, "savedmodel_dir", "starts with hdfs:// but model_store_type is 'local'"),
    ({"savedmodel_dir": "s3://b/sm"}, "savedmodel_dir", "starts with s3:// but model_store_type is 'local'"),
    ({**BASE, "download_threads": 0}, "download_threads", "must be >= 1"),
    ({**BASE, "request_log": "/tmp/log"}, "request_log", "must be an object like"),
    ({**BASE, "request_log": {"sample_rate": 0.5}}, "request_log.path", "is required"),
    ({**BASE, "request_log": {"path": "/l", "sample_rate": 1.5}}, "request_log.sample_rate", "must be between 0 and 1"),
    ({**BASE, "request_log": {"path": "/l", "max_records": 0}}, "request_log.max_records", "must be >= 1"),
    ({**BASE, "request_log": {"path": "/l", "rate": 1}}, "request_log.rate", "is not a request_log field"),
    ({**BASE, "download_retries": -1}, "download_retries", "must be >= 0"),
    ({**BASE, "serialize_protocol": "json"}, "serialize_protocol", "must be one of 'protobuf'"),
    ({**BASE, "signature_name": ""}, "signature_name", "must not be empty"),
    ({**BASE, "init_timeout_minutes": -2}, "init_timeout_minutes", "must be >= 0"),
    ({**BASE, "init_timeout_minutes": "10"}, "init_timeout_minutes", "must be a number"),
    ({**BASE, "read_thread_num": 0}, "read_thread_num", "must be >= 1"),
    ({**BASE, "feature_store_cache_bytes": -1}, "feature_store_cache_bytes", "must be >= 0"),
    ({**BASE, "omp_num_threads": 0}, "omp_num_threads", "must be >= 1"),
    ({**BASE, "timeline_trace_count": 3}, "timeline_path", "is required when timeline_trace_count > 0"),
    ({**BASE, "ev_storage_type": "TAPE"}, "ev_storage_type", "must be one of"),
    ({**BASE, "ev_storage_size": [1, "x"]}, "ev_storage_size[1]", "must be an integer"),
    ({**BASE, "ev_storage_size": "big"}, "ev_storage_size", "must be an integer or a list of integers"),
    ({**BASE, "ev_storage_type": 2}, "ev_storage_type", "is 2 (PMEM_MEMKIND); DeepRec's processor serves only 0 (DEFAULT), "
                                                        "1 (DRAM), 12 (DRAM_SSDHASH)"),
    ({**BASE, "ev_storage_type": 7}, "ev_storage_type", "must be one of DeepRec's storage types"),
    ({**BASE, "omp_num_threads": "four"}, "omp_num_threads", "must be an integer (or a string holding one)"),
    ({**BASE, "shard_embedding": True, "embedding_names": "a;b"}, "shard_embedding",
     "needs embedding_names, shard_instance_count (>= 1) and id_type"),
    ({**BASE, "shard_embedding": True, "feature_store_type": "cluster_redis", "redis_url": "r:1"}, "shard_embedding",
     "needs feature_store_type 'local'"),
    ({**BASE, "id_type": "uuid"}, "id_type", "must be one of '', 'string', 'int64'"),
    ({**BASE, "timeline_path": "hdfs://nn/timeline"}, "timeline_path", "must be a local directory or oss://bucket/path"),
    ({**BASE, "timeline_path": "oss:///timeline"}, "timeline_path", "must name a bucket"),
    ({**BASE, "timeline_path": "oss://b/timeline"}, "oss_endpoint", "is required to upload the timeline to OSS"),
    ({**BASE, "warmup_file_name": ["a"]}, "warmup_file_name", "must be a string, got list"),
    ({**BASE, "redis_password": 123}, "redis_password", "must be a string"),
    ({**BASE, "poll_interval_seconds": -5}, "poll_interval_seconds", "must be >= 0"),
    ({**BASE, "version_policy": "fast"}, "version_policy", "must be one of 'availability_preserving', 'resource_preserving'"),
    ({**BASE, "rollback_keep": 0}, "rollback_keep", "must be >= 1"),
    ({**BASE, "warmup_iterations": 0}, "warmup_iterations", "must be >= 1"),
    ({**BASE, "batching_parameters": {"max_batch_size": 8}}, "batching_parameters",
     'is set but enable_batching is not true: add "enable_batching": true'),
    ({**BASE, "enable_batching": True, "batching_parameters": {"max_batch_size": 0}},
     "batching_parameters.max_batch_size", "must be >= 1, got 0"),
    ({**BASE, "enable_batching": True, "batching_parameters": {"max_batch_size": {"value": "x"}}},
     "batching_parameters.max_batch_size", 'must be an integer (or a string holding one), got str "x"'),
    ({**BASE, "enable_batching": True, "batching_parameters": {"max_batch_size": 64, "allowed_batch_sizes": [8, 32]}},
     "batching_parameters.allowed_batch_sizes", "must end with max_batch_size (64), as TF Serving requires; got [8, 32]"),
    ({**BASE, "enable_batching": True, "batching_parameters": {"allowed_batch_sizes": [8, 8, 1000]}},
     "batching_parameters.allowed_batch_sizes", "must be increasing, got [8, 8, 1000]"),
    ({**BASE, "enable_batching": True, "batching_parameters": {"batch_size": 8}},
     "batching_parameters.batch_size", "is not a batching parameter (max_batch_size, batch_timeout_micros"),
    ({**BASE, "enable_batching": True, "batching_parameters": 8}, "batching_parameters", "must be an object"),
    ({**BASE, "enable_batching": "yes"}, "enable_batching", "must be true or false"),
]


def test_batching_parameters_take_tf_servings_names_and_forms():
    """Plain numbers, numeric strings and google.protobuf wrappers ({"value": n}, as TF Serving's
    BatchingParameters holds them) alike; its defaults where a field is left out; its fields that
    change nothing here are accepted."""
    from processor.config import BatchingParameters
    config = parse_config({**BASE, "enable_batching": True, "batching_parameters": {
        "max_batch_size": {"value": 128}, "batch_timeout_micros": "500", "num_batch_threads": 4,
        "allowed_batch_sizes": [16, 64, 128], "pad_variable_length_inputs": True, "thread_pool_name": "x"}})
    assert config.batching_parameters == BatchingParameters(max_batch_size=128, batch_timeout_micros=500,
                                                            max_enqueued_batches=10, num_batch_threads=4,
                                                            allowed_batch_sizes=(16, 64, 128))
    assert parse_config(BASE).enable_batching is False


@pytest.mark.parametrize("document,field,message", BAD_CONFIGS, ids=[f"{c[1]}-{i}" for i, c in enumerate(BAD_CONFIGS)])
def test_bad_config_names_the_field(document, field, message, monkeypatch):
    for variable in ("OSS_ENDPOINT", "OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(processor.ConfigError) as error:
        parse_config(document)
    assert error.value.field == field
    assert str(error.value).startswith(f"config field '{field}': ")
    assert message in str(error.value)


@pytest.mark.parametrize("source,message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ("/no/such/config.json", "neither a JSON object nor a readable file"),
    (b"\xff{", "not UTF-8"),
    (42, "must be a dict, a JSON string or a file path"),
])
def test_unparseable_documents(source, message):
    with pytest.raises(processor.ConfigError) as error:
        parse_config(source)
    assert message in str(error.value)


def test_unknown_keys_are_warned_about_not_fatal(caplog):
    with caplog.at_level(logging.WARNING, logger="processor.config"):
        config = parse_config({**BASE, "model_tag": "x", "zzz": 1})
    assert config.unknown_keys == ["model_tag", "zzz"]
    assert "ignoring unknown config keys: model_tag, zzz" in caplog.text


def test_oss_credentials_may_come_from_oss2s_environment_variables(monkeypatch):
    monkeypatch.setenv("OSS_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", "id-from-env")
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", "key-from-env")
    config = parse_config({"savedmodel_dir": "oss://b/sm", "model_store_type": "oss"})
    assert (config.oss_endpoint, config.oss_access_id, config.oss_access_key) == ("", "", "")  # read when used


def test_secrets_never_appear_in_repr_or_redacted_form():
    config = parse_config({"savedmodel_dir": "oss://b/sm", "feature_store_type": "redis", "redis_url": "r:1",
                           "redis_password": "SENTINEL-PW", "model_store_type": "oss", "oss_endpoint": "e", "oss_access_id": "SENTINEL-ID",
                           "oss_access_key": "SENTINEL-KEY"})
    for text in (repr(config), str(config), json.dumps(config.redacted())):
        assert "SENTINEL" not in text


def test_an_unreachable_feature_store_is_named_at_initialize(rec_model):
    with pytest.raises(processor.ModelLoadError, match="feature store: cannot reach Redis at 127.0.0.1:1"):
        processor.Processor(rec_model.config(feature_store_type="redis", redis_url="127.0.0.1:1", embedding_min_rows=1000))


@pytest.mark.parametrize("document,message", [
    ('{"savedmodel_dir": "/m", "poll_interval_seconds": 1e10}', "'poll_interval_seconds': must be at most 1e+07, got 1"),
    ('{"savedmodel_dir": "/m", "poll_interval_seconds": Infinity}', "'poll_interval_seconds': must be at most 1e+07, got inf"),
    ('{"savedmodel_dir": "/m", "init_timeout_minutes": NaN}', "'init_timeout_minutes': must be >= 0, got nan"),
    ("[" * 100000 + "]" * 100000, "the config is not valid JSON: it nests too deeply"),
    ("/etc/\0config.json", "neither a JSON object nor a readable file: embedded null byte"),
])
def test_out_of_range_and_hostile_documents_are_config_errors(document, message):
    with pytest.raises(processor.ConfigError) as error:
        parse_config(document)
    assert message in str(error.value)


def test_deeprecs_lenient_reading(caplog):
    """What jsoncpp's asInt/asBool/asString accept, as model_config.cc reads each field."""
    config = parse_config({**BASE, "checkpoint_dir": None, "session_num": 2.0, "use_per_session_threads": 1,
                           "enable_inline_execute": 0, "omp_num_threads": "4", "kmp_blocktime": "0",
                           "init_timeout_minutes": -1, "embedding_names": "a;b, c"})
    assert config.checkpoint_dir == ""  # null: absent
    assert (config.session_num, config.use_per_session_threads, config.enable_inline_execute) == (2, True, False)
    assert (config.omp_num_threads, config.kmp_blocktime, config.init_timeout_minutes) == (4, 0, -1)
    assert config.embedding_names == ["a", "b", "c"]


@pytest.mark.parametrize("given,name", [(0, "DEFAULT"), (1, "DRAM"), (12, "DRAM_SSDHASH"), ("DRAM", "DRAM")])
def test_ev_storage_type_is_deeprecs_number(given, name):
    assert parse_config({**BASE, "ev_storage_type": given, "ev_storage_path": "/ssd"}).ev_storage_type == name


def test_ev_storage_sizes_are_bytes_padded_to_four_tiers_as_deeprec_does():
    config = parse_config({**BASE, "ev_storage_type": 12, "ev_storage_size": [2**33, 2**34], "ev_storage_path": "/ssd"})
    assert config.ev_storage_size == [2**33, 2**34]
    assert config.ev_storage_sizes == [2**33, 2**34, 2**30, 2**30]
    assert parse_config({**BASE, "ev_storage_type": 1, "ev_storage_size": [2**33]}).ev_storage_sizes == [2**33]


@pytest.mark.parametrize("given,meant", [("memory", "local"), ("local", "local"), ("cluster_redis", "redis"),
                                         ("redis", "redis")])
def test_deeprecs_feature_store_names(given, meant):
    assert parse_config({**BASE, "feature_store_type": given, "redis_url": "r:1"}).feature_store_type == meant


def test_keys_deeprec_knows_and_this_build_cannot_honour_are_logged_once_with_the_reason(caplog, fresh_config_log):
    document = {**BASE, "cpusets": "0-1;2-3", "gpu_ids_list": "0,1", "use_multi_stream": True, "lock_timeout": 900}
    with caplog.at_level(logging.WARNING, logger="processor.config"):
        config = parse_config(document)
        parse_config(document)
    assert config.not_honoured == ["cpusets", "gpu_ids_list", "lock_timeout", "use_multi_stream"]
    assert config.unknown_keys == []
    for key, reason in [("cpusets", "cannot pin them"), ("gpu_ids_list", "tensorflow-cpu"),
                        ("use_multi_stream", "GPU feature"), ("lock_timeout", "renewed while its holder writes")]:
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"not honouring config key {key}:")]
        assert len(lines) == 1 and reason in lines[0], (key, lines)


def test_inline_execution_wins_over_inter_op_threads_and_says_so(caplog, fresh_config_log):
    with caplog.at_level(logging.WARNING, logger="processor.config"):
        config = parse_config({**BASE, "enable_inline_execute": True, "inter_op_parallelism_threads": 7})
    assert config.enable_inline_execute and config.inter_op_parallelism_threads == 7
    assert "enable_inline_execute wins over inter_op_parallelism_threads (7)" in caplog.text
    from processor.session_group import pool_threads
    assert pool_threads(config) == 1  # no request runs on the serving pools


def test_schedulable_cpus_sets_the_thread_counts_a_config_leaves_out(monkeypatch):
    monkeypatch.setenv("SCHEDULABLE_CPUS", "6")
    config = parse_config(BASE)
    assert (config.inter_op_parallelism_threads, config.intra_op_parallelism_threads) == (3, 3)
    config = parse_config({**BASE, "intra_op_parallelism_threads": 1})
    assert (config.inter_op_parallelism_threads, config.intra_op_parallelism_threads) == (3, 1)
    monkeypatch.setenv("SCHEDULABLE_CPUS", "1")
    assert parse_config(BASE).inter_op_parallelism_threads == 1
    monkeypatch.delenv("SCHEDULABLE_CPUS")
    assert parse_config(BASE).inter_op_parallelism_threads == 0
