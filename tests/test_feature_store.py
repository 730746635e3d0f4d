"""The feature store's import side against real redis-server processes (one server, and a cluster of
three masters): tables streamed from TF checkpoints, versions complete only as a whole, one importer
among replicas, old versions deleted, passwords; and layout_filters."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import processor
from processor.feature_store.checkpoint_rows import iter_rows
from processor.feature_store.layout_filters import parse_layout_filter, select_shards
from processor.feature_store.redis_tables import RedisTables, connect
from redis_servers import RedisServer

TABLES = {"items": "item_embedding", "users": "user_embedding"}


def tf_table(prefix: str, name: str) -> np.ndarray:
    import tensorflow as tf
    return tf.train.load_checkpoint(prefix).get_tensor(name)


def test_rows_stream_from_the_checkpoint_in_blocks(rec_model):
    prefix = rec_model.prefixes()[-1]
    blocks = list(iter_rows(prefix, "item_embedding", block_rows=700))
    assert [first for first, _ in blocks] == list(range(0, len(blocks) * 700, 700))
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), tf_table(prefix, "item_embedding"))
    with pytest.raises(processor.ModelLoadError, match="has no variable 'nope'"):
        next(iter_rows(prefix, "nope"))


@pytest.mark.parametrize("where", ["standalone", "cluster"])
def test_an_imported_version_reads_back_as_tensorflows_values(rec_model, where, request):
    url = request.getfixturevalue(where).address if where == "standalone" else request.getfixturevalue(where).url
    store = RedisTables(connect(url), namespace=f"rec-{where}", partitions=8, update_threads=2, block_rows=1000)
    prefix = rec_model.prefixes()[-1]
    assert store.ensure_version(20, {t: (prefix, v) for t, v in TABLES.items()}) is True
    assert store.complete_versions() == [20]
    for table, variable in TABLES.items():
        expected = tf_table(prefix, variable)
        ids = np.array([0, 5, len(expected) - 1, 5, 3])
        np.testing.assert_array_equal(store.lookup(20, table, ids), expected[ids])
        np.testing.assert_array_equal(store.lookup(20, table, np.arange(len(expected))), expected)
    missing = store.lookup(20, "items", [10**9], default=np.full(8, 0.5, np.float32))
    np.testing.assert_array_equal(missing, np.full((1, 8), 0.5, np.float32))
    if where == "cluster":  # the partitions spread over the masters
        import redis
        holders = [redis.Redis(port=s.port).dbsize() for s in request.getfixturevalue("cluster").servers]
        assert sum(1 for keys in holders if keys) >= 2, holders


def test_replicas_import_a_version_once_and_agree(rec_model, cluster):
    prefix = rec_model.prefixes()[-1]
    replicas = [RedisTables(connect(cluster.url), namespace="rec-replicas", partitions=8) for _ in range(3)]
    results = [None] * 3

    def replica(i):
        results[i] = replicas[i].ensure_version(7, {"items": (prefix, "item_embedding")})

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, True]  # one imported, two waited for the marker
    ids = np.arange(100)
    answers = [r.lookup(7, "items", ids) for r in replicas]
    for answer in answers:
        np.testing.assert_array_equal(answer, tf_table(prefix, "item_embedding")[ids])


def test_a_version_is_not_complete_until_all_of_it_is_written(rec_model, standalone):
    store = RedisTables(connect(standalone.address), namespace="rec-partial", partitions=4, block_rows=500)
    prefix = rec_model.prefixes()[-1]
    seen_while_importing = []
    original = store._import

    def watching_import(version, tables, token):
        seen_while_importing.append(store.is_complete(version))
        original(version, tables, token)
        seen_while_importing.append(store.is_complete(version))

    store._import = watching_import
    store.ensure_version(1, {"items": (prefix, "item_embedding")})
    assert seen_while_importing == [False, True]


def test_old_versions_are_deleted_beyond_keep(rec_model, standalone):
    import redis
    store = RedisTables(connect(standalone.address), namespace="rec-keep", partitions=4)
    prefix = rec_model.prefixes()[-1]
    for version in (1, 2, 3):
        store.ensure_version(version, {"items": (prefix, "item_embedding")})
    assert store.delete_old_versions(keep=1) == [1, 2]
    assert store.complete_versions() == [3]
    left = {key.decode() for key in redis.Redis(port=standalone.port).scan_iter("pe:{rec-keep*")}
    assert left and all("/3/" in key or key.endswith(":versions") or key.endswith(":v:3") for key in left), left


def test_a_password_is_required_and_never_shown(tmp_path):
    server = RedisServer(tmp_path / "auth", password="SENTINEL-redis-pw-77")
    try:
        with pytest.raises(processor.ProcessorError) as error:
            connect(server.address, "wrong-password-12")
        assert "refused the password (check redis_password)" in str(error.value)
        assert "wrong-password-12" not in str(error.value)
        with pytest.raises(processor.ProcessorError) as error:
            connect(server.address)
        assert "needs a password" in str(error.value)
        store = RedisTables(connect(server.address, "SENTINEL-redis-pw-77"), namespace="rec-auth")
        assert store.complete_versions() == []
    finally:
        server.stop()


def test_an_unreachable_redis_is_a_clear_error():
    with pytest.raises(processor.ProcessorError) as error:
        connect("127.0.0.1:9")
    assert str(error.value).startswith("cannot reach Redis at 127.0.0.1:9")


# ---- layout_filters


def test_layout_filters_choose_shards():
    odd = parse_layout_filter("ps_{i}; i % 2 == 1")
    shards = [f"model/ps_{i}/table-00000-of-00002" for i in range(6)] + ["model/worker_0/x"]
    assert select_shards(shards, [odd]) == [shards[1], shards[3], shards[5]]
    two_fields = parse_layout_filter("ps_{i}/table-{s}-of; i >= 2 and s == 0")
    assert select_shards(shards, [two_fields]) == shards[2:6]
    assert not parse_layout_filter("ps_{i}; i == 1").keeps("ps_10")  # ps_1 is not a prefix of ps_10
    assert select_shards(shards, []) == shards
    assert parse_layout_filter("ps_{i}; i // 0 == 1").keeps("ps_3") is False  # undecidable: not loaded


@pytest.mark.parametrize("text,message", [
    ("ps_{i}", "must be 'PATTERN; CONDITION'"),
    ("ps_x; 1 == 1", "names no {field}"),
    ("ps_{i}; __import__('os').system('true')", "Call is not allowed"),
    ("ps_{i}; i.real == 1", "Attribute is not allowed"),
    ("ps_{i}; j == 1", "uses 'j', which the pattern does not name"),
    ("ps_{i}; i == 'a'", "only integer constants"),
    ("ps_{i}; i ==", "is not an expression"),
    ("ps_{i}; [i for i in ()]", "is not allowed"),
])
def test_layout_filters_refuse_anything_but_arithmetic(text, message):
    with pytest.raises(processor.ConfigError) as error:
        parse_layout_filter(text)
    assert error.value.field == "layout_filters" and message in str(error.value)
