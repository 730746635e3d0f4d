"""Incremental checkpoints: written by the training-side writer, applied atomically in step order on top
of the serving full version; the served values equal TensorFlow's for the trainer's current state."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import processor
from processor import training
from processor.loading import deltas as incremental
from processor.formats.checkpoint_index import read_index
from model_builders import save_predict_signature
from lifecycle_helpers import DeltaTrainer, matching_version, prob_of, serialize, wait_for

FAST_POLL = {"poll_interval_seconds": 0.05}
@pytest.fixture
def delta_model(rec_model, tmp_path):
    model = rec_model.copy(tmp_path)
    writer = DeltaTrainer(model)
    writer.trainer.restore(model.prefixes()[-1])  # the trainer starts from the version being served
    writer.snapshot = writer.values()
    return model, writer


def test_writer_layout_and_contents(delta_model):
    model, writer = delta_model
    prefix = writer.train_and_save_delta(seed=1)
    directory = os.path.join(model.checkpoint_dir, ".incremental_checkpoint")
    assert os.path.dirname(prefix) == directory and os.path.isfile(prefix + ".index")
    assert open(os.path.join(directory, "checkpoint")).read().startswith(f'model_checkpoint_path: "{os.path.basename(prefix)}"')
    tensors = read_index(prefix)
    keys = tensors["item_embedding-sparse_incr_keys"]
    values = tensors["item_embedding-sparse_incr_values"]
    assert keys.dtype == 9 and values.shape == (keys.shape[0], 8)  # int64 ids, [n, dim] rows
    assert 0 < keys.shape[0] < 5000, "only the changed rows are written"
    assert tensors["fc1/kernel"].shape == (28, 32)


def test_deltas_apply_in_order_and_match_tensorflow(delta_model, batch):
    model, writer = delta_model
    with processor.Processor(model.config(**FAST_POLL)) as p:
        full_step = p.model_info().version_step
        first = writer.train_and_save_delta(seed=1)
        wait_for(lambda: p.model_info().delta_step == int(first.rsplit("-", 1)[1]), what="the first delta")
        np.testing.assert_allclose(p.predict(batch)["prob"], writer.trainer.predict(batch)["prob"], atol=1e-6)
        second = writer.train_and_save_delta(seed=2)
        wait_for(lambda: p.model_info().delta_step == int(second.rsplit("-", 1)[1]), what="the second delta")
        outputs = p.predict(batch)
        expected = writer.trainer.predict(batch)
        for name in expected:
            np.testing.assert_allclose(outputs[name], expected[name], atol=1e-6, err_msg=name)
        info = p.model_info()
        assert info.version_step == full_step and info.updates_applied == 2


def test_deltas_under_load_are_atomic(delta_model, batch):
    """Every response equals the full version's or one delta's TensorFlow answer, in forward order."""
    model, writer = delta_model
    request = serialize(batch)
    references = [writer.trainer.predict(batch)["prob"]]
    with processor.Processor(model.config(**FAST_POLL)) as p:
        seen, failures, stop = [], [], threading.Event()

        def client():
            while not stop.is_set():
                code, body = p.process(request)
                (seen if code == 200 else failures).append(prob_of(body) if code == 200 else body)

        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            for seed in range(3):
                prefix = writer.train_and_save_delta(steps=2, seed=10 + seed)
                references.append(writer.trainer.predict(batch)["prob"])
                wait_for(lambda: p.model_info().delta_step == int(prefix.rsplit("-", 1)[1]), what="a delta")
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert failures == []
    order = [matching_version(prob, references) for prob in seen]
    assert -1 not in order, "a response matched no single version: a delta was seen half-applied"
    assert order[-1] == len(references) - 1 and len(seen) > 20


def test_new_full_version_gets_its_deltas_before_it_serves(delta_model, batch):
    model, writer = delta_model
    with processor.Processor(model.config(poll_interval_seconds=0)) as p:
        writer.trainer.train(3, seed=4)
        full = writer.save_full()
        delta = writer.train_and_save_delta(seed=5)
        assert p.update()
        info = p.model_info()
        assert info.model_path == full and info.delta_step == int(delta.rsplit("-", 1)[1])
        np.testing.assert_allclose(p.predict(batch)["prob"], writer.trainer.predict(batch)["prob"], atol=1e-6)
    with processor.Processor(model.config(poll_interval_seconds=0)) as fresh:  # a restart applies them too
        assert fresh.model_info().delta_step == int(delta.rsplit("-", 1)[1])
        np.testing.assert_allclose(fresh.predict(batch)["prob"], writer.trainer.predict(batch)["prob"], atol=1e-6)


@pytest.mark.parametrize("bad,message", [
    ({"item_embedding-sparse_incr_keys": np.array([1, 2], np.int64),
      "item_embedding-sparse_incr_values": np.zeros((2, 5), np.float32)}, "values have shape [2,5]"),
    ({"fc1/kernel": np.zeros((3, 3), np.float32)}, "value has shape [3,3], the variable [28,32]"),
    ({"fc1/kernel": np.zeros((28, 32), np.float64)}, "cannot read incremental checkpoint"),
    ({"item_embedding-sparse_incr_keys": np.array([1], np.int64)}, "has no item_embedding-sparse_incr_values"),
])
def test_a_bad_delta_changes_nothing_and_blocks_later_ones(delta_model, batch, bad, message, caplog):
    model, writer = delta_model
    with processor.Processor(model.config(poll_interval_seconds=0)) as p:
        before = p.predict(batch)
        good_update = {"fc1/bias": np.full(32, 0.5, np.float32)}  # would change outputs if applied
        directory = os.path.join(model.checkpoint_dir, ".incremental_checkpoint")
        os.makedirs(directory)
        step = p.model_info().version_step
        prefixes = []
        for offset, tensors in ((1, {**bad, **good_update}), (2, good_update)):
            prefixes.append(os.path.join(directory, f"model.ckpt-{step + offset}"))
            training.save_tensors(prefixes[-1], tensors)
        training.write_checkpoint_state(directory, prefixes)
        with pytest.raises(processor.ModelLoadError) as error:
            p.update()
        assert message in str(error.value) and prefixes[0] in str(error.value)
        after = p.predict(batch)
        for name in before:
            np.testing.assert_array_equal(after[name], before[name])  # not even fc1/bias changed
        info = p.model_info()
        assert info.delta_step == -1 and info.updates_failed == 1


@pytest.mark.parametrize("store", ["none", "local", "redis"])
def test_a_delta_saving_a_partitioned_variable_whole_is_applied(tmp_path, store, request):
    """DeepRec's incremental saver writes a partitioned variable whole, as tf.train.Saver does: the full
    name ("table") with a slice per part (tensorflow/python/training/saving/saveable_object_util.py,
    PartitionedVariable -> one SaveSpec per part under the full name). Every part must change."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    ids = np.array([0, 5, 16, 17, 30, 33, 34, 49], dtype=np.int64)
    graph = tf.Graph()
    with graph.as_default():
        ids_in = tf1.placeholder(tf.int64, [None], name="ids")
        table = tf1.get_variable("table", [50, 4], initializer=tf1.random_normal_initializer(seed=3),
                                 partitioner=tf1.fixed_size_partitioner(3))
        rows = tf.identity(tf.nn.embedding_lookup(table, ids_in), name="rows")
        saver = tf1.train.Saver()
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            save_predict_signature(session, str(tmp_path / "saved_model"), {"ids": ids_in}, {"rows": rows}, saver=saver)
            checkpoints = tmp_path / "checkpoints"
            saver.save(session, str(checkpoints / "model.ckpt"), global_step=10)
            before = session.run(rows, {ids_in: ids})
            session.run([part.assign(part + 1.0) for part in table])  # every row of every part changes
            after = session.run(rows, {ids_in: ids})
            delta_dir = checkpoints / incremental.INCREMENTAL_DIR
            tf1.train.Saver(var_list=list(table)).save(session, str(delta_dir / "model.ckpt-11"),
                                                      write_state=False)
    assert "table" in read_index(str(delta_dir / "model.ckpt-11"))  # the full name, in slices
    config = {"savedmodel_dir": str(tmp_path / "saved_model"), "checkpoint_dir": str(checkpoints), **FAST_POLL}
    if store != "none":
        config.update(feature_store_type=store, embedding_names=["table/part_0", "table/part_1", "table/part_2"])
    if store == "redis":
        config.update(redis_url=request.getfixturevalue("standalone").address, feature_store_namespace="whole_parts")
    with processor.Processor(config) as p:
        np.testing.assert_allclose(p.predict({"ids": ids})["rows"], before, rtol=0, atol=1e-6)
        training.write_checkpoint_state(str(delta_dir), [str(delta_dir / "model.ckpt-11")])
        wait_for(lambda: p.model_info().delta_step == 11, what="delta 11")
        np.testing.assert_allclose(p.predict({"ids": ids})["rows"], after, rtol=0, atol=1e-6)
        assert p.model_info().updates_failed == 0


def test_a_bad_delta_on_disk_at_start_does_not_stop_the_full_version(delta_model, batch):
    model, writer = delta_model
    directory = os.path.join(model.checkpoint_dir, incremental.INCREMENTAL_DIR)
    os.makedirs(directory)
    prefix = os.path.join(directory, f"model.ckpt-{int(model.prefixes()[-1].rsplit('-', 1)[1]) + 1}")
    training.save_tensors(prefix, {"item_embedding-sparse_incr_keys": np.array([1, 2], np.int64),
                                       "item_embedding-sparse_incr_values": np.zeros((2, 5), np.float32)})
    training.write_checkpoint_state(directory, [prefix])
    with processor.Processor(model.config(poll_interval_seconds=0)) as p:
        info = p.model_info()
        assert (info.model_path, info.delta_step, info.updates_failed) == (model.prefixes()[-1], -1, 1)
        np.testing.assert_allclose(p.predict(batch)["prob"], writer.trainer.predict(batch)["prob"], atol=1e-6)


@pytest.mark.parametrize("store", ["none", "local", "redis"])
def test_rows_whose_id_is_outside_the_variable_are_skipped_and_the_rest_apply(rec_model, tmp_path, batch, store,
                                                                             request, capfd, caplog):
    """DeepRec skips a delta's rows whose id the serving variable cannot hold; so does Processor, with a
    warning that counts them, and the delta's other rows apply (it used to refuse the delta forever)."""
    model = rec_model.copy(tmp_path)
    config = model.config(poll_interval_seconds=0)
    if store != "none":
        config.update(feature_store_type=store, embedding_names=["item_embedding"])
    if store == "redis":
        config.update(redis_url=request.getfixturevalue("standalone").address, feature_store_namespace="outside")
    inputs = {name: np.asarray(value)[:3] for name, value in batch.items()}
    inputs["item_id"] = np.array([1, 2, 3], np.int64)
    with processor.Processor(config) as p:
        before = p.predict(inputs)["item_vector"]
        directory = os.path.join(model.checkpoint_dir, incremental.INCREMENTAL_DIR)
        os.makedirs(directory)
        step = p.model_info().version_step + 1
        rows = np.stack([np.full(8, 7.0), np.full(8, 8.0), np.full(8, 9.0), np.full(8, 6.0)]).astype(np.float32)
        training.save_tensors(os.path.join(directory, f"model.ckpt-{step}"), {
            "item_embedding-sparse_incr_keys": np.array([1, 99999, 2, -4], np.int64),
            "item_embedding-sparse_incr_values": rows})
        training.write_checkpoint_state(directory, [os.path.join(directory, f"model.ckpt-{step}")])
        p.update()
        served = p.predict(inputs)["item_vector"]
        info = p.model_info()
    np.testing.assert_array_equal(served[0], np.full(8, 7.0, np.float32))
    np.testing.assert_array_equal(served[1], np.full(8, 9.0, np.float32))
    np.testing.assert_array_equal(served[2], before[2])
    assert info.delta_step == step and info.updates_failed == 0
    warnings = capfd.readouterr().err + caplog.text
    assert "skipped 2 row(s) whose id is outside [0, 5000)" in warnings
