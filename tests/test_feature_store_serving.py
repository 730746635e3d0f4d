"""Serving embeddings from the feature store: the graph rewritten at load (gathers replaced by
ProcessorEmbeddingLookup), tables in this process ("local") or in real redis-server processes (one
server, a 3-master cluster). Outputs are compared with TensorFlow's own for the same checkpoint."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import processor
from processor import _core
from processor.config import parse_config
from processor.loading import control
from lifecycle_helpers import DeltaTrainer, matching_version, prob_of, serialize, wait_for
from model_builders import build_lookup_model
from processor.feature_store.redis_tables import VARIANTS_PER_VERSION, RedisTables, connect
from redis_servers import RedisServer

EMBEDDINGS_OF_REC = {"feature_store_type": "local", "embedding_min_rows": 1000}  # user (1000) and item (5000) rows
PASSWORD = "s3cret-Redis-pass"


def assert_outputs_equal(actual: dict, expected: dict) -> None:
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, rtol=0, atol=1e-6, err_msg=name)


# ---- the rewrite, with tables in this process


def plan_embeddings(savedmodel_dir: str, **selection) -> list:
    """(name, rows, dim, saved name, first row) of what step 1 of a load plans to serve from the store."""
    from processor import control_pb2
    config = parse_config({"savedmodel_dir": savedmodel_dir})
    request = control.load_request(config, savedmodel_dir,
                                   feature_store=control_pb2.FeatureStore(feature_store_type="local", **selection))
    return [(e.name, e.rows, e.dim, e.saved_name, e.first_row)
            for e in control.planned_embeddings(control.plan_load(request))]


def test_the_plan_names_the_gathered_tables(rec_model):
    assert plan_embeddings(rec_model.savedmodel_dir, embedding_min_rows=1000) == [
        ("user_embedding", 1000, 8, "user_embedding", 0), ("item_embedding", 5000, 8, "item_embedding", 0)]
    assert plan_embeddings(rec_model.savedmodel_dir, embedding_names=["category_embedding"]) == [
        ("category_embedding", 6, 8, "category_embedding", 0)]


def test_local_tables_serve_tensorflows_outputs(rec_model, reference, batch):
    with processor.Processor(rec_model.config(**EMBEDDINGS_OF_REC, poll_interval_seconds=0)) as p:
        assert_outputs_equal(p.predict(batch), reference.predict(rec_model.prefixes()[-1], batch))
        assert p.model_info().version_step == int(rec_model.prefixes()[-1].rsplit("-", 1)[1])


def build_ids_model(path: str, resource_variables: bool) -> dict:
    """ids -> rows of a [50, 4] table (ResourceGather, or Gather of a ref variable) and, through a read
    of the whole table and GatherV2, a score. Returns the table and weights saved."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        ids = tf1.placeholder(tf.int64, [None], name="ids")
        with tf1.variable_scope("ids_model", use_resource=resource_variables):
            table = tf1.get_variable("table", [50, 4], initializer=tf1.random_normal_initializer(seed=1))
            weights = tf1.get_variable("weights", [4, 1], initializer=tf1.random_normal_initializer(seed=2))
        rows = tf.identity(tf.nn.embedding_lookup(table, ids), name="rows")
        whole = table.read_value() if resource_variables else tf.identity(table)
        score = tf.squeeze(tf.matmul(tf.gather(whole, ids), weights), axis=1, name="score")
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            builder = tf1.saved_model.Builder(path)
            signature = tf1.saved_model.signature_def_utils.predict_signature_def(
                inputs={"ids": ids}, outputs={"rows": rows, "score": score})
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature},
                                                 saver=tf1.train.Saver())
            builder.save()
            return {"table": session.run(table), "weights": session.run(weights)}


@pytest.mark.parametrize("resource_variables", [True, False], ids=["resource", "ref"])
def test_ids_the_table_lacks_read_the_default_row(tmp_path, resource_variables):
    saved = build_ids_model(str(tmp_path / "model"), resource_variables)
    config = {"savedmodel_dir": str(tmp_path / "model"), "embedding_names": ["ids_model/table"],
              "embedding_default_value": 0.25, "poll_interval_seconds": 0}
    ids = np.array([0, 7, 49, 50, -1, 7, 10**12], dtype=np.int64)
    expected_rows = np.where(((ids >= 0) & (ids < 50))[:, None], saved["table"][np.clip(ids, 0, 49)], 0.25)
    with processor.Processor(config) as p:
        outputs = p.predict({"ids": ids})
    np.testing.assert_array_equal(outputs["rows"], expected_rows.astype(np.float32))
    np.testing.assert_allclose(outputs["score"], (expected_rows @ saved["weights"])[:, 0], rtol=1e-6)


@pytest.mark.parametrize("where", ["local", "redis"])
def test_partitioned_embeddings_are_one_table_per_part(tmp_path, where, request, caplog):
    """A [50, 4] table split in 3 parts, saved as slices of one checkpoint tensor. The rewritten graph is
    nothing but lookups (no dense variable, no init op), and it still runs as a TensorFlow callable."""
    ids = np.array([0, 1, 2, 3, 17, 25, 48, 49, 3], dtype=np.int64)
    expected = build_lookup_model(str(tmp_path / "model"), rows=50, dim=4, partitions=3, seed=3, sample_ids=ids)
    config = {"savedmodel_dir": str(tmp_path / "model"), "embedding_min_rows": 10, "poll_interval_seconds": 0}
    if where == "redis":
        config.update(feature_store_type="redis", redis_url=request.getfixturevalue("standalone").address,
                      feature_store_namespace="partitioned")
    plan = plan_embeddings(config["savedmodel_dir"], embedding_min_rows=10)
    assert [(name, rows, saved, first) for name, rows, _, saved, first in plan] == [
        ("table/part_0", 17, "table", 0), ("table/part_1", 17, "table", 17), ("table/part_2", 16, "table", 34)]
    with processor.Processor(config) as p:
        np.testing.assert_array_equal(p.predict({"ids": ids})["rows"], expected)
    assert "runs through TF_SessionRun" not in caplog.text


def test_embeddings_that_cannot_be_served_from_the_store_are_named(rec_model):
    cases = [({"embedding_names": ["fc1/kernel"]}, "'fc1/kernel' cannot be served from the feature store: it is read by "
                                                   "'fc1/MatMul' (MatMul), not only gathered by id"),
             ({"embedding_names": ["no_such_variable"]}, "the graph has no variable 'no_such_variable'"),
             ({"embedding_names": ["global_step"]}, "the signature does not read variable 'global_step'"),
             ({"embedding_min_rows": 10**6}, "no embedding to serve")]
    for selection, message in cases:
        with pytest.raises(processor.ModelLoadError, match=message.replace("(", r"\(").replace(")", r"\)")):
            processor.Processor(rec_model.config(**selection, poll_interval_seconds=0))


def test_local_tables_take_a_deltas_rows_atomically(rec_model, tmp_path, batch):
    model = rec_model.copy(tmp_path)
    writer = DeltaTrainer(model)
    writer.trainer.restore(model.prefixes()[-1])
    writer.snapshot = writer.values()
    with processor.Processor(model.config(**EMBEDDINGS_OF_REC, poll_interval_seconds=0)) as p:
        delta = writer.train_and_save_delta(seed=3)
        assert p.update()
        assert p.model_info().delta_step == int(delta.rsplit("-", 1)[1])
        assert_outputs_equal(p.predict(batch), writer.trainer.predict(batch))


# ---- Redis


def stored_as(version: int) -> int:
    """The number a version's tables have in Redis in a namespace used by one test (its sources' first
    variant: RedisTables.version_id)."""
    return version * VARIANTS_PER_VERSION + 1


def redis_config(model, url: str, namespace: str, **overrides) -> dict:
    return model.config(**{"feature_store_type": "redis", "redis_url": url, "embedding_min_rows": 1000,
                           "feature_store_namespace": namespace, "poll_interval_seconds": 0, **overrides})


@pytest.mark.parametrize("where", ["standalone", "cluster"])
def test_redis_serves_tensorflows_outputs(rec_model, reference, batch, where, request):
    servers = request.getfixturevalue(where)
    url = servers.address if where == "standalone" else servers.url
    # the cluster with DeepRec's default: every table the signature only gathers from, category's too
    selection = {"embedding_min_rows": 1000} if where == "standalone" else {"embedding_min_rows": 0}
    with processor.Processor(redis_config(rec_model, url, f"serve-{where}", read_thread_num=2, **selection)) as p:
        assert_outputs_equal(p.predict(batch), reference.predict(rec_model.prefixes()[-1], batch))
        # a batch of 512 with repeated ids reads each id once, and still answers per example
        big = {k: np.concatenate([v] * 86)[:512] for k, v in batch.items()}
        assert_outputs_equal(p.predict(big), reference.predict(rec_model.prefixes()[-1], big))
    tables = RedisTables(connect(url), f"serve-{where}")
    step = int(rec_model.prefixes()[-1].rsplit("-", 1)[1])
    [stored_as] = [v for v in tables.complete_versions() if v // VARIANTS_PER_VERSION == step]
    stored = tables.tables(stored_as)
    assert sorted(stored) == (["item_embedding", "user_embedding"] if where == "standalone" else
                              ["category_embedding", "item_embedding", "user_embedding"])


def test_versions_switch_whole_under_load_and_old_ones_are_deleted(rec_model, tmp_path, reference, batch, standalone):
    """Two replicas serve from one namespace; new versions are imported once, every answer under load is
    exactly one version's, and Redis keeps the serving version and rollback_keep others."""
    import redis
    model = rec_model.copy(tmp_path)
    model.trainer.restore(model.prefixes()[-1])
    config = redis_config(model, standalone.address, "switch", rollback_keep=1)
    request = serialize(batch)
    references = [reference.predict(model.prefixes()[-1], batch)["prob"]]
    with processor.Processor(config) as first, processor.Processor(config) as second:
        seen_by_thread, failures, stop = [[], []], [], threading.Event()
        seen = seen_by_thread[0]  # each thread's answers in the order its requests ran

        def client(seen):
            while not stop.is_set():
                code, body = first.process(request)
                (seen if code == 200 else failures).append(prob_of(body) if code == 200 else body)

        threads = [threading.Thread(target=client, args=(answers,)) for answers in seen_by_thread]
        for t in threads:
            t.start()
        try:
            for seed in range(3):
                model.trainer.train(5, seed=20 + seed)
                prefix = model.trainer.save_checkpoint(model.checkpoint_dir)
                references.append(reference.predict(prefix, batch)["prob"])
                assert first.update() and second.update()
                wait_for(lambda: len(seen) > 0 and matching_version(seen[-1], references) == len(references) - 1,
                         what="answers of the new version")
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not failures, failures[:3]
        for answers in seen_by_thread:
            versions = [matching_version(prob, references) for prob in answers]
            assert -1 not in versions, "an answer matched no version: a torn read"
            assert versions == sorted(versions) and versions[-1] == 3
        np.testing.assert_allclose(prob_of(second.process(request)[1]), references[-1], atol=1e-6)
        steps = [int(p.rsplit("-", 1)[1]) for p in model.prefixes()]
        tables = RedisTables(redis.Redis(port=standalone.port), "switch")
        # the serving version and rollback_keep = 1 other (each under the number of its sources)
        assert [v // VARIANTS_PER_VERSION for v in tables.complete_versions()] == steps[-2:]
        assert not redis.Redis(port=standalone.port).keys(f"pe:{{switch/{steps[-3]}/*")


def test_redis_takes_a_deltas_changed_rows_once(rec_model, tmp_path, batch, standalone):
    import redis
    model = rec_model.copy(tmp_path)
    writer = DeltaTrainer(model)
    writer.trainer.restore(model.prefixes()[-1])
    writer.snapshot = writer.values()
    config = redis_config(model, standalone.address, "deltas")
    with processor.Processor(config) as first, processor.Processor(config) as second:
        delta = writer.train_and_save_delta(seed=4)
        step = int(delta.rsplit("-", 1)[1])
        assert first.update() and second.update()
        expected = writer.trainer.predict(batch)
        for p in (first, second):
            assert p.model_info().delta_step == step
            assert_outputs_equal(p.predict(batch), expected)
        version = stored_as(first.model_info().version_step)
        assert redis.Redis(port=standalone.port).zrange(f"pe:{{deltas}}:deltas:{version}", 0, -1) == [str(step).encode()]


def test_redis_restarted_mid_serving_gives_503_then_recovers(rec_model, reference, batch, tmp_path):
    server = RedisServer(tmp_path / "redis")
    try:
        with processor.Processor(redis_config(rec_model, server.address, "restart")) as p:
            request = serialize(batch)
            expected = reference.predict(rec_model.prefixes()[-1], batch)["prob"]
            assert p.process(request)[0] == 200
            server.shutdown_saving()
            code, body = p.process(request)
            assert code == 503, body
            assert f"Redis at {server.address}" in body.decode() and "embedding table" in body.decode()
            assert p.model_info().version_step > 0  # the version still serves: nothing was unloaded
            server.start()
            back = time.monotonic()
            while (answer := p.process(request))[0] != 200:  # a refused server is dialled again after 250 ms
                assert answer[0] == 503, answer
                assert time.monotonic() - back < 5, answer
                time.sleep(0.01)
            print(f"requests succeed {time.monotonic() - back:.3f} s after Redis is back")
            np.testing.assert_allclose(prob_of(answer[1]), expected, atol=1e-6)
    finally:
        server.stop()


def test_redis_password(rec_model, reference, batch, tmp_path):
    server = RedisServer(tmp_path / "redis", password=PASSWORD)
    try:
        with processor.Processor(redis_config(rec_model, server.address, "auth", redis_password=PASSWORD)) as p:
            assert_outputs_equal(p.predict(batch), reference.predict(rec_model.prefixes()[-1], batch))
        for wrong in ("", "not-the-password"):
            with pytest.raises(processor.ModelLoadError) as raised:
                processor.Processor(redis_config(rec_model, server.address, "auth", redis_password=wrong))
            message = str(raised.value)
            assert ("needs a password" if not wrong else "refused the password") in message, message
            assert PASSWORD not in message and (not wrong or wrong not in message)
    finally:
        server.stop()


# ---- Monolith hash-table dumps


def write_monolith_dump(directory, name: str, shards: int, dim: int, rng) -> dict:
    """TFRecord shards of EntryDump records with hash-like ids; returns id -> (shard, row)."""
    from processor.feature_store.table_sources import encode_entry_dump
    from processor.formats.tfrecord import write_record
    directory.mkdir(parents=True, exist_ok=True)
    entries = {}
    for shard in range(shards):
        with open(directory / f"{name}-{shard:05d}-of-{shards:05d}", "wb") as f:
            for _ in range(40):
                entry_id = int(rng.integers(-2**62, 2**62))
                row = rng.standard_normal(dim).astype(np.float32)
                write_record(f, encode_entry_dump(entry_id, row))
                entries[entry_id] = (shard, row)
    return entries


def write_shard(path, records) -> None:
    from processor.formats.tfrecord import write_record
    with open(path, "wb") as f:
        for record in records:
            write_record(f, record)


def test_entry_dumps_parse_packed_or_not_and_bad_ones_are_named(tmp_path):
    """The data plane's reader (cpp/feature_store/monolith_dump.cc), which both stores use: proto2's
    unpacked floats and packed ones, other fields skipped; a bad record is named with its byte offset."""
    from processor.feature_store.table_sources import MonolithTable, encode_entry_dump
    row = np.array([1.5, -2.0, 0.25], np.float32)
    packed = b"\x09" + np.int64(9).tobytes() + b"\x12\x0c" + row.tobytes() + b"\x20\x05"  # + last_update_ts_sec
    write_shard(tmp_path / "good", [encode_entry_dump(-7, row), packed])
    ids, rows = _core.MonolithShard(str(tmp_path / "good")).read(10)
    np.testing.assert_array_equal(ids, [-7, 9])
    np.testing.assert_array_equal(rows, np.stack([row, row]))
    for records, message in (([b"\x12\x0c" + row.tobytes()], "record 0 at byte 0: an EntryDump record has no id"),
                             ([encode_entry_dump(1, row), b"\x09\x01\x02"], "record 1 at byte 40: not an EntryDump"),
                             ([encode_entry_dump(1, row), encode_entry_dump(2, row[:2])],
                              "entry 2 has 2 numbers, the shard's first 3")):
        write_shard(tmp_path / "bad", records)
        with pytest.raises(_core.LoadError, match=message):
            _core.MonolithShard(str(tmp_path / "bad")).read(10)
    data = bytearray((tmp_path / "good").read_bytes())
    data[20] ^= 0x40  # a bit of the first entry's id: TFRecord's data CRC no longer matches
    (tmp_path / "bad").write_bytes(bytes(data))
    with pytest.raises(_core.LoadError, match="bad'?: record 0 at byte 0: data checksum mismatch"):
        _core.MonolithShard(str(tmp_path / "bad")).read(10)
    (tmp_path / "bad").write_bytes(bytes((tmp_path / "good").read_bytes()[:-3]))
    with pytest.raises(_core.LoadError, match="record 1 at byte 40: truncated"):
        _core.MonolithShard(str(tmp_path / "bad")).read(10)
    write_monolith_dump(tmp_path / "dump", "emb", 3, 3, np.random.default_rng(0))
    os.remove(tmp_path / "dump" / "emb-00001-of-00003")
    with pytest.raises(processor.ModelLoadError, match="shards of table 'emb' .* are incomplete"):
        MonolithTable(str(tmp_path / "dump"), "emb")


def monolith_config(tmp_path, store: str, request, namespace: str) -> dict:
    config = {"savedmodel_dir": str(tmp_path / "model"), "feature_store_type": store,  # the table is an embedding
              "monolith_tables": {"ids_model/table": str(tmp_path / "dump" / "emb")},
              "embedding_default_value": -1.0, "poll_interval_seconds": 0}
    if store == "redis":
        config.update(redis_url=request.getfixturevalue("standalone").address, feature_store_namespace=namespace)
    if store == "tiers":  # local, in two tiers with a DRAM tier of a few rows (tests/test_feature_store_tiers.py)
        config.update(feature_store_type="local", ev_storage_type=12, ev_storage_path=str(tmp_path / "ssd"),
                      ev_storage_size=[1024])
    return config


@pytest.mark.parametrize("store", ["local", "redis", "tiers"])
def test_a_monolith_table_serves_the_shards_layout_filters_keep(tmp_path, store, request):
    build_ids_model(str(tmp_path / "model"), resource_variables=True)
    entries = write_monolith_dump(tmp_path / "dump", "emb", 4, 4, np.random.default_rng(3))
    config = {**monolith_config(tmp_path, store, request, "monolith"), "layout_filters": ["emb-{i}-of; i % 2 == 1"]}
    ids = np.array(list(entries) + [0, 1, 49], dtype=np.int64)  # the graph variable's own ids are not the dump's
    with processor.Processor(config) as p:
        rows = p.predict({"ids": ids})["rows"]
    for entry_id, row in zip(ids, rows):
        shard, expected = entries.get(int(entry_id), (0, None))
        np.testing.assert_array_equal(row, expected if shard % 2 == 1 else np.full(4, -1.0, np.float32))
    write_monolith_dump(tmp_path / "dump3", "emb", 1, 3, np.random.default_rng(4))
    with pytest.raises(processor.ModelLoadError, match="has rows of 3 numbers, variable 'ids_model/table' of 4"):
        processor.Processor({**config, "monolith_tables": {"ids_model/table": str(tmp_path / "dump3" / "emb")},
                             "layout_filters": []})


@pytest.mark.parametrize("store", ["local", "redis"])
def test_a_corrupt_monolith_shard_is_refused(tmp_path, store, request):
    """A flipped byte in a row fails TFRecord's CRC: the version is refused, never served (issue 23)."""
    build_ids_model(str(tmp_path / "model"), resource_variables=True)
    write_monolith_dump(tmp_path / "dump", "emb", 2, 4, np.random.default_rng(8))
    shard = tmp_path / "dump" / "emb-00001-of-00002"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(processor.ModelLoadError, match=r"emb-00001-of-00002'?: record \d+ at byte \d+: "
                                                       r"(data|length) checksum mismatch"):
        processor.Processor(monolith_config(tmp_path, store, request, "corrupt"))


@pytest.mark.parametrize("store", ["local", "redis", "tiers"])
def test_a_monolith_table_takes_a_deltas_rows_by_id(tmp_path, store, request, capfd, caplog):
    """A sparse delta's rows are written by id, whatever the id (a hash table's ids are not row numbers);
    a delta saving the variable whole does not touch the dump's rows, and says so."""
    import shutil
    from processor import training
    from processor.loading import deltas as incremental
    build_ids_model(str(tmp_path / "model"), resource_variables=True)
    entries = write_monolith_dump(tmp_path / "dump", "emb", 2, 4, np.random.default_rng(9))
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(tmp_path / "model" / "variables" / f"variables{suffix}", checkpoints / f"model.ckpt-1{suffix}")
    training.write_checkpoint_state(str(checkpoints), [str(checkpoints / "model.ckpt-1")])
    config = {**monolith_config(tmp_path, store, request, "monolith_delta"), "checkpoint_dir": str(checkpoints)}
    known = sorted(entries)[:2]
    ids = np.array(known + [2**61 + 3, 5], dtype=np.int64)
    with processor.Processor(config) as p:
        before = p.predict({"ids": ids})["rows"]
        deltas = checkpoints / incremental.INCREMENTAL_DIR
        deltas.mkdir()
        new_rows = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32)
        training.save_tensors(str(deltas / "model.ckpt-2"), {
            "ids_model/table-sparse_incr_keys": np.array([known[1], 2**61 + 3], np.int64),
            "ids_model/table-sparse_incr_values": new_rows})
        training.write_checkpoint_state(str(deltas), [str(deltas / "model.ckpt-2")])
        p.update()
        after = p.predict({"ids": ids})["rows"]
        training.save_tensors(str(deltas / "model.ckpt-3"), {"ids_model/table": np.zeros((50, 4), np.float32)})
        training.write_checkpoint_state(str(deltas), [str(deltas / "model.ckpt-2"), str(deltas / "model.ckpt-3")])
        p.update()
        whole = p.predict({"ids": ids})["rows"]
        info = p.model_info()
    np.testing.assert_array_equal(before[0], entries[known[0]][1])
    np.testing.assert_array_equal(before[1:], [entries[known[1]][1], np.full(4, -1.0), np.full(4, -1.0)])
    np.testing.assert_array_equal(after, [entries[known[0]][1], new_rows[0], new_rows[1], np.full(4, -1.0)])
    np.testing.assert_array_equal(whole, after)
    assert (info.delta_step, info.updates_failed) == (3, 0)
    assert "saves 'ids_model/table' whole; its table holds a Monolith dump's ids" in capfd.readouterr().err + caplog.text


def test_a_newer_monolith_dump_is_imported_and_its_rows_served(tmp_path, standalone):
    """Same SavedModel, same namespace, a restart with a newer dump: its rows, never the old dump's."""
    build_ids_model(str(tmp_path / "model"), resource_variables=True)
    config = {"savedmodel_dir": str(tmp_path / "model"), "feature_store_type": "redis", "redis_url": standalone.address,
              "feature_store_namespace": "newer_dump", "embedding_names": ["ids_model/table"],
              "monolith_tables": {"ids_model/table": str(tmp_path / "dump" / "emb")}, "poll_interval_seconds": 0}
    for seed in (5, 6):
        entries = write_monolith_dump(tmp_path / "dump", "emb", 2, 4, np.random.default_rng(seed))
        ids = np.array(sorted(entries), dtype=np.int64)
        with processor.Processor(config) as p:
            rows = p.predict({"ids": ids})["rows"]
        np.testing.assert_array_equal(rows, np.stack([entries[int(i)][1] for i in ids]))


def test_instances_with_other_layout_filters_serve_their_own_shards(tmp_path, standalone):
    """Two instances, the default namespace, different layout_filters: each serves its own shards."""
    build_ids_model(str(tmp_path / "model"), resource_variables=True)
    entries = write_monolith_dump(tmp_path / "dump", "emb", 4, 4, np.random.default_rng(7))
    ids = np.array(list(entries), dtype=np.int64)
    base = {"savedmodel_dir": str(tmp_path / "model"), "feature_store_type": "redis", "redis_url": standalone.address,
            "embedding_names": ["ids_model/table"], "monolith_tables": {"ids_model/table": str(tmp_path / "dump" / "emb")},
            "embedding_default_value": -1.0, "poll_interval_seconds": 0}
    with processor.Processor({**base, "layout_filters": ["emb-{i}-of; i % 2 == 0"]}) as even, \
            processor.Processor({**base, "layout_filters": ["emb-{i}-of; i % 2 == 1"]}) as odd:
        for p, parity in ((even, 0), (odd, 1)):
            rows = p.predict({"ids": ids})["rows"]
            for entry_id, row in zip(ids, rows):
                shard, expected = entries[int(entry_id)]
                np.testing.assert_array_equal(row, expected if shard % 2 == parity else np.full(4, -1.0, np.float32))


def test_cluster_redirections_are_followed(rec_model, reference, batch, cluster):
    """A partition's slot moves to another master while serving: first half-way (the old owner answers
    ASK for the key already moved), then for good (MOVED, and the slot map is reread)."""
    import redis
    nodes = {s.port: redis.Redis(port=s.port) for s in cluster.servers}
    with processor.Processor(redis_config(rec_model, cluster.url, "redirect")) as p:
        expected = reference.predict(rec_model.prefixes()[-1], batch)
        assert_outputs_equal(p.predict(batch), expected)
        version = stored_as(p.model_info().version_step)
        key = f"pe:{{redirect/{version}/item_embedding/{int(batch['item_id'][0]) % 16}}}"
        slot = nodes[cluster.servers[0].port].cluster("keyslot", key)
        source = next(r for r in nodes.values() if r.cluster("countkeysinslot", slot))
        target = next(r for r in nodes.values() if r is not source)
        source_id, target_id = source.cluster("myid"), target.cluster("myid")
        target_port = target.connection_pool.connection_kwargs["port"]

        target.cluster("setslot", slot, "importing", source_id)
        source.cluster("setslot", slot, "migrating", target_id)
        source.migrate("127.0.0.1", target_port, key, 0, 5000)
        asking_before = target.info("commandstats").get("cmdstat_asking", {}).get("calls", 0)
        assert_outputs_equal(p.predict(batch), expected)
        assert target.info("commandstats")["cmdstat_asking"]["calls"] > asking_before, "no ASK was followed"

        for node in nodes.values():
            node.cluster("setslot", slot, "node", target_id)
        slot_maps_before = sum(n.info("commandstats").get("cmdstat_cluster|slots", {}).get("calls", 0)
                               for n in nodes.values())
        assert_outputs_equal(p.predict(batch), expected)
        assert sum(n.info("commandstats").get("cmdstat_cluster|slots", {}).get("calls", 0)
                   for n in nodes.values()) > slot_maps_before, "MOVED did not reread the slot map"
