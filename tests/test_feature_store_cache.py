"""The hot-row cache in front of Redis (feature_store_cache_bytes; cpp/feature_store/row_cache.h inside
each version's RedisTable), against a real redis-server: TensorFlow's outputs through it, its
counters and bound, a delta this replica applies served exactly once update() returns, another
replica's delta reaching this replica's cache within the store check's period (and exactly once it
applies the delta), and a new version never served another version's cached rows."""
from __future__ import annotations

import re
import time

import numpy as np

import processor
import recommendation_model
from lifecycle_helpers import DeltaTrainer, wait_for
from processor.feature_store.checkpoint_rows import read_tensor

CACHE_BYTES = 1 << 20


def redis_config(model, url: str, namespace: str, **overrides) -> dict:
    return model.config(**{"feature_store_type": "redis", "redis_url": url, "embedding_min_rows": 1000,
                           "feature_store_namespace": namespace, "poll_interval_seconds": 0,
                           "feature_store_cache_bytes": CACHE_BYTES, **overrides})


def tiers(p) -> dict:
    """(metric, table, tier) -> value of the :processor:feature_store_tier_* metrics."""
    found = re.findall(r':processor:feature_store_tier_(\w+)\{[^}]*table="([^"]+)"(?:,tier="(\w+)")?\} (\d+)',
                       p.metrics())
    return {(metric, table, tier): int(value) for metric, table, tier, value in found}


def assert_outputs_equal(actual: dict, expected: dict) -> None:
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, rtol=0, atol=1e-6, err_msg=name)


def test_cached_rows_serve_tensorflows_outputs_and_are_counted(rec_model, reference, batch, standalone):
    users = len(set(batch["user_id"].tolist()))
    with processor.Processor(redis_config(rec_model, standalone.address, "cache-counts")) as p:
        expected = reference.predict(rec_model.prefixes()[-1], batch)
        assert_outputs_equal(p.predict(batch), expected)
        first = tiers(p)
        assert first[("lookups", "user_embedding", "redis")] == users
        assert first[("lookups", "user_embedding", "dram")] == 0
        assert_outputs_equal(p.predict(batch), expected)  # from the cache now
        second = tiers(p)
    assert second[("lookups", "user_embedding", "dram")] == users
    assert second[("lookups", "user_embedding", "redis")] == users
    # the bytes are shared by the version's two tables
    assert 0 < second[("bytes", "user_embedding", "dram")] <= CACHE_BYTES // 2
    assert second[("dram_rows", "user_embedding", "")] == users


def test_the_cache_stays_within_its_bytes_and_lets_rows_go(rec_model, reference, standalone):
    budget = 16 << 10
    with processor.Processor(redis_config(rec_model, standalone.address, "cache-bound",
                                          feature_store_cache_bytes=budget)) as p:
        rng = np.random.default_rng(3)
        for _ in range(6):
            big = recommendation_model.random_batch(512, rng)
            assert_outputs_equal(p.predict(big), reference.predict(rec_model.prefixes()[-1], big))
        counts = tiers(p)
    for table in ("user_embedding", "item_embedding"):
        assert 0 < counts[("bytes", table, "dram")] <= budget // 2
        assert counts[("evictions", table, "")] + counts[("rejections", table, "")] > 0


def test_deltas_reach_each_replicas_cache(rec_model, tmp_path, batch, standalone):
    """The first replica writes a delta's rows and serves them as soon as update() returns; the second,
    with the old rows cached, serves the new rows within the store check's period (a second), before
    it applies the delta itself, and exactly the new model once it has."""
    model = rec_model.copy(tmp_path)
    writer = DeltaTrainer(model)
    writer.trainer.restore(model.prefixes()[-1])
    writer.snapshot = writer.values()
    config = redis_config(model, standalone.address, f"cache-deltas-{tmp_path.name}")
    with processor.Processor(config) as first, processor.Processor(config) as second:
        before = writer.trainer.predict(batch)
        for p in (first, second):
            for _ in range(2):
                assert_outputs_equal(p.predict(batch), before)  # the batch's rows cached
        cached = tiers(second)[("lookups", "user_embedding", "dram")]
        delta = writer.train_and_save_delta(seed=4)
        after = writer.trainer.predict(batch)
        changed = set(read_tensor(delta, "user_embedding-sparse_incr_keys").tolist())
        assert changed & set(batch["user_id"].tolist()), "the delta changes none of the batch's rows: no test"
        assert first.update()
        assert_outputs_equal(first.predict(batch), after)
        written = time.monotonic()
        # the second replica: its cached rows of the changed ids go within the check's period; its dense
        # weights are still the old ones until it applies the delta, so its outputs are neither model's
        wait_for(lambda: not np.allclose(second.predict(batch)["prob"], before["prob"], rtol=0, atol=1e-6),
                 timeout=5, what="the second replica to let go of the rows the delta changed")
        assert time.monotonic() - written < 3.0
        assert tiers(second)[("lookups", "user_embedding", "dram")] > cached  # it did serve from its cache
        assert second.update()
        for _ in range(2):  # from Redis, then from the cache again
            assert_outputs_equal(second.predict(batch), after)


def test_a_new_version_never_serves_the_old_versions_cached_rows(rec_model, reference, tmp_path, batch, standalone):
    model = rec_model.copy(tmp_path)
    writer = DeltaTrainer(model)
    writer.trainer.restore(model.prefixes()[-1])
    with processor.Processor(redis_config(model, standalone.address, f"cache-versions-{tmp_path.name}")) as p:
        for _ in range(2):
            p.predict(batch)
        writer.trainer.train(3, seed=21)
        new = writer.save_full()
        assert p.update()
        for _ in range(2):
            assert_outputs_equal(p.predict(batch), reference.predict(new, batch))
