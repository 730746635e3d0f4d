"""DeepRec models on stock TensorFlow: a SavedModel whose embedding is an EmbeddingVariable (DeepRec's
Kv ops, which stock TensorFlow cannot import) and DeepRec's checkpoint of it load and serve what
DeepRec's lookup gives: held ids their rows, other ids their initializer's default rows. The
artefacts follow DeepRec's source (tests/deeprec_models.py says which file each part follows); the
reference is the same model built from ordinary variables, run by TensorFlow. A C host serves it too:
tests/test_c_host.py."""
from __future__ import annotations

import numpy as np
import pytest

import processor
from deeprec_models import DEFAULT_VALUE_DIM, build_deeprec_model, save_deeprec_delta


@pytest.fixture(scope="module")
def deeprec_model(tmp_path_factory):
    return build_deeprec_model(str(tmp_path_factory.mktemp("deeprec")))


def batch_of(ids):
    ids = np.asarray(ids, np.int64)
    return {"user_id": ids, "dense": np.linspace(-1, 1, len(ids) * 4, dtype=np.float32).reshape(len(ids), 4)}


def test_stock_tensorflow_cannot_import_the_graph(deeprec_model):
    """The fixture is what it claims: TensorFlow's own loader refuses DeepRec's ops."""
    import tensorflow as tf
    with pytest.raises(Exception, match="KvVarHandleOp|Op type not registered"):
        with tf.compat.v1.Session(graph=tf.Graph()) as session:
            tf.compat.v1.saved_model.loader.load(session, ["serve"], deeprec_model.savedmodel_dir)


def test_a_gather_with_a_default_value_tensor_reads_it_for_missing_ids(tmp_path):
    """is_use_default_value_tensor: the gather's default_value input, one row per id, for ids the EV
    lacks (kv_variable_ops.cc: default_v + len * index)."""
    model = build_deeprec_model(str(tmp_path / "deeprec"), seed=4, default_value_tensor=True)
    batch = batch_of(np.concatenate([model.keys[:2], [3, 1001, 2 ** 34]]))
    config = {"savedmodel_dir": model.savedmodel_dir, "checkpoint_dir": model.checkpoint_dir,
              "poll_interval_seconds": 0}
    with processor.Processor(config) as p:
        np.testing.assert_allclose(p.predict(batch)["prob"], model.expected(batch), rtol=0, atol=1e-6)
    assert model.rows(batch["user_id"])[3][0] == np.float32(1001 * 0.001)


def test_an_embedding_variable_model_serves_deeprecs_lookups(deeprec_model, capfd):
    held = deeprec_model.keys[:5]
    missing = np.array([1, 3, 2001, 2 ** 40 + 5, -7], np.int64)  # odd, beyond the keys, huge, negative
    batch = batch_of(np.concatenate([held, missing]))
    config = {"savedmodel_dir": deeprec_model.savedmodel_dir, "checkpoint_dir": deeprec_model.checkpoint_dir,
              "poll_interval_seconds": 0}
    with processor.Processor(config) as p:
        np.testing.assert_allclose(p.predict(batch)["prob"], deeprec_model.expected(batch), rtol=0, atol=1e-6)
        assert p.model_info().model_path == deeprec_model.prefix
    logged = capfd.readouterr().err  # the data plane's lines
    assert "DeepRec EmbeddingVariables: serving them from local tables" in logged
    assert "EmbeddingVariable 'user_emb': 40 rows" in logged
    # the lookups really differ between held and missing ids, and missing ones follow id % default_value_dim
    rows = deeprec_model.rows(batch["user_id"])
    assert not np.allclose(rows[0], rows[5])
    np.testing.assert_array_equal(rows[-1], deeprec_model.default_rows[-7 % DEFAULT_VALUE_DIM])


@pytest.fixture(params=["local", "redis", "tiers"])
def where(request):
    return request.param


@pytest.mark.parametrize("partitions", [1, 2], ids=["one EV", "two parts"])
def test_deeprecs_embedding_variable_deltas_apply_atomically(tmp_path, where, request, partitions):
    """A delta changes held rows, adds new ids and replaces the dense weights; the served outputs are
    the new model's for held, new and still-missing ids, from local tables and from Redis (imported
    from DeepRec's EV tensors, the delta's rows written there by id); for one EV and for an EV in two
    parts, each part's table holding the ids routed to it."""
    model = build_deeprec_model(str(tmp_path / "deeprec"), seed=3, partitions=partitions)
    config = {"savedmodel_dir": model.savedmodel_dir, "checkpoint_dir": model.checkpoint_dir,
              "poll_interval_seconds": 0}
    if where == "redis":
        config.update(feature_store_type="cluster_redis", redis_url=request.getfixturevalue("standalone").address,
                      feature_store_namespace=f"deeprec-ev-{tmp_path.name}")
    if where == "tiers":  # local, two tiers, a DRAM tier of a few rows (tests/test_feature_store_tiers.py)
        config.update(ev_storage_type=12, ev_storage_path=str(tmp_path / "ssd"), ev_storage_size=[1024])
    ids = np.array([model.keys[0], model.keys[1], 7, 9, 2 ** 35 + 1, -3], np.int64)
    batch = batch_of(ids)
    rng = np.random.default_rng(5)
    with processor.Processor(config) as p:
        before = p.predict(batch)["prob"]
        np.testing.assert_allclose(before, model.expected(batch), atol=1e-6)
        changed = np.array([model.keys[0], 7], np.int64)  # one held id, one new
        weights = {name: rng.standard_normal(value.shape).astype(np.float32) for name, value in model.weights.items()}
        delta = save_deeprec_delta(model, 2, changed, rng.standard_normal((2, 8)).astype(np.float32), weights)
        assert p.update()
        assert p.model_info().delta_step == 2
        after = p.predict(batch)["prob"]
        np.testing.assert_allclose(after, model.expected(batch), atol=1e-6)
        assert not np.allclose(after[[0, 2]], before[[0, 2]])
        if where == "tiers":  # every part's rows were served through its DRAM tier
            lookups = [line for line in p.metrics().splitlines()
                       if line.startswith(":processor:feature_store_tier_lookups") and 'tier="disk"' in line]
            assert len(lookups) == partitions and all(int(line.rsplit(" ", 1)[1]) > 0 for line in lookups), lookups
    assert delta.endswith("/.incremental_checkpoint/incremental_model.ckpt-2")
