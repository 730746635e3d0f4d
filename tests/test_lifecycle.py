"""Versions change on disk while the processor serves: polling, atomic swaps, faults, rollback."""
from __future__ import annotations

import gc
import os
import shutil
import threading

import numpy as np
import pytest

import processor
from abi import CAbi
from lifecycle_helpers import loaded_versions, matching_version, prob_of, serialize, wait_for
from model_builders import build_counting_model

FAST_POLL = {"poll_interval_seconds": 0.05}


def new_version(model, steps=3, seed=0) -> str:
    model.trainer.train(steps, seed=seed)
    return model.trainer.save_checkpoint(model.checkpoint_dir)


def test_polling_serves_a_new_checkpoint(rec_model, reference, batch, tmp_path):
    model = rec_model.copy(tmp_path)
    with processor.Processor(model.config(**FAST_POLL)) as p:
        newer = new_version(model)
        wait_for(lambda: p.model_info().model_path == newer, what="the new version to serve")
        np.testing.assert_allclose(p.predict(batch)["prob"], reference.predict(newer, batch)["prob"], atol=1e-6)
        assert p.model_info().updates_applied == 1


def test_swaps_under_load_are_atomic_and_only_move_forward(rec_model, reference, batch, tmp_path):
    """Two threads send requests while four versions are written; every answer is exactly one version's
    TensorFlow output, the versions seen only move forward, and nothing fails."""
    model = rec_model.copy(tmp_path)
    request = serialize(batch)
    prefixes = [model.prefixes()[-1]]
    with processor.Processor(model.config(**FAST_POLL)) as p:
        seen = {0: [], 1: []}
        failures = []
        stop = threading.Event()

        def client(index):
            while not stop.is_set():
                code, body = p.process(request)
                if code != 200:
                    failures.append((code, body))
                else:
                    seen[index].append(prob_of(body))

        threads = [threading.Thread(target=client, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        try:
            for i in range(4):
                prefixes.append(new_version(model, seed=i + 1))
                wait_for(lambda: p.model_info().model_path == prefixes[-1], what=f"version {i + 1}")
            # Two more answers per client: the second began after the last swap, so it saw that version.
            answered = {index: len(probs) for index, probs in seen.items()}
            wait_for(lambda: failures or all(len(seen[i]) >= answered[i] + 2 for i in seen),
                     what="two answers per client after the last swap")
        finally:
            stop.set()
            for t in threads:
                t.join()
    references = [reference.predict(prefix, batch)["prob"] for prefix in prefixes]
    assert failures == []
    for index, probs in seen.items():
        order = [matching_version(prob, references) for prob in probs]
        assert -1 not in order, "a response matched no single version"
        assert order == sorted(order), f"thread {index} saw versions go backwards"
        assert len(probs) > 20
    assert max(max(matching_version(pr, references) for pr in probs) for probs in seen.values()) == len(prefixes) - 1


def test_a_request_keeps_its_version_while_a_swap_serves_the_next_and_releases_the_old_after_it(tmp_path):
    """A request holds the version it started on until it answers: a swap meanwhile serves the new
    version to new requests at once, and the old version is released only once that request is done."""
    base = tmp_path / "models"
    build_counting_model(str(base / "1"), tag=1)
    gc.collect()
    with processor.Processor({"savedmodel_dir": str(base), "poll_interval_seconds": 0.05}) as p:
        serving = loaded_versions(p)  # version 1, and any other in the process
        assert int(p.predict({"n": 0})["tag"]) == 1
        long_request = {}
        thread = threading.Thread(target=lambda: long_request.update(p.predict({"n": 2_000_000})))  # seconds
        thread.start()
        threading.Event().wait(0.3)  # it has begun: the thread only had to enter process()
        build_counting_model(str(base / "2"), tag=2)
        wait_for(lambda: p.model_info().savedmodel_version == 2, what="version 2 to serve")
        quick = p.predict({"n": 5})
        assert thread.is_alive(), "the long request ended before the swap: make it longer"
        assert (int(quick["tag"]), int(quick["count"])) == (2, 5)
        assert loaded_versions(p) == serving + 1  # the long request still holds version 1
        thread.join()
        assert (int(long_request["tag"]), int(long_request["count"])) == (1, 2_000_000)
        wait_for(lambda: gc.collect() is not None and loaded_versions(p) == serving,
                 what="version 1 to be released")
        assert int(p.predict({"n": 0})["tag"]) == 2


def publish(model, staging, seed, damage=None):
    """Writes a version like a trainer does (files first, the state file naming it last), with
    `damage(prefix)` applied before the state file names it; returns (prefix, repair)."""
    model.trainer.train(3, seed=seed)
    staged = model.trainer.saver.save(model.trainer.session, str(staging / "model.ckpt"),
                                      global_step=model.trainer.global_step, write_state=False)
    base = os.path.basename(staged)
    for name in os.listdir(staging):
        if name.startswith(base + "."):
            shutil.copy(staging / name, model.checkpoint_dir)
    prefix = os.path.join(model.checkpoint_dir, base)
    repair = damage(prefix) if damage else (lambda: None)
    state = os.path.join(model.checkpoint_dir, "checkpoint")
    with open(state + ".tmp", "w") as f:
        f.write(f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n')
    os.replace(state + ".tmp", state)
    return prefix, repair


def damage_missing_shard(prefix):
    os.rename(prefix + ".data-00000-of-00001", prefix + ".hidden")
    return lambda: os.rename(prefix + ".hidden", prefix + ".data-00000-of-00001")


def damage_truncated_index(prefix):
    original = open(prefix + ".index", "rb").read()
    with open(prefix + ".index", "wb") as f:
        f.write(original[: len(original) // 2])
    return lambda: open(prefix + ".index", "wb").write(original)


def damage_corrupt_data(prefix):
    path = prefix + ".data-00000-of-00001"
    original = open(path, "rb").read()
    corrupt = bytearray(original)
    for i in range(0, len(corrupt), 97):
        corrupt[i] ^= 0xFF
    open(path, "wb").write(bytes(corrupt))
    return lambda: open(path, "wb").write(original)


def damage_state_file_ahead(prefix):
    """The state file names the version before its files exist."""
    directory, base = os.path.split(prefix)
    files = {name: open(os.path.join(directory, name), "rb").read()
             for name in os.listdir(directory) if name.startswith(base + ".")}
    for name in files:
        os.remove(os.path.join(directory, name))

    def repair():
        for name, data in files.items():
            open(os.path.join(directory, name), "wb").write(data)
    return repair


def damage_missing_index(prefix):
    os.rename(prefix + ".index", prefix + ".hidden")
    return lambda: os.rename(prefix + ".hidden", prefix + ".index")


def damage_corrupt_index(prefix):
    original = open(prefix + ".index", "rb").read()
    corrupt = bytearray(original)
    for i in range(len(corrupt) // 4, len(corrupt), 13):
        corrupt[i] ^= 0x5A
    open(prefix + ".index", "wb").write(bytes(corrupt))
    return lambda: open(prefix + ".index", "wb").write(original)


def damage_truncated_data(prefix):
    path = prefix + ".data-00000-of-00001"
    original = open(path, "rb").read()
    open(path, "wb").write(original[: len(original) // 3])
    return lambda: open(path, "wb").write(original)


def _replace_with_another_graphs_checkpoint(prefix, reshape):
    """Overwrites the version's files with a checkpoint of another graph: the same variables passed
    through `reshape(name, shape)`, which returns the shape to save or None to leave the variable out."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    directory, base = os.path.split(prefix)
    originals = {name: open(os.path.join(directory, name), "rb").read()
                 for name in os.listdir(directory) if name.startswith(base + ".")}
    dtypes = tf.train.load_checkpoint(prefix).get_variable_to_dtype_map()
    graph = tf.Graph()
    with graph.as_default():
        variables = []
        for name, shape in tf.train.list_variables(prefix):
            new_shape = reshape(name, shape)
            if new_shape is not None:
                variables.append(tf1.get_variable(name, shape=new_shape, dtype=dtypes[name],
                                                  initializer=tf1.zeros_initializer()))
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            tf1.train.Saver(variables).save(session, prefix, write_state=False, write_meta_graph=False)

    def repair():
        for name, data in originals.items():
            open(os.path.join(directory, name), "wb").write(data)
    return repair


def damage_another_graph_missing_variables(prefix):
    dropped = []

    def drop_first_weight(name, shape):
        if not dropped and len(shape) == 2:
            dropped.append(name)
            return None
        return shape
    return _replace_with_another_graphs_checkpoint(prefix, drop_first_weight)


def damage_another_graph_misshaped_variables(prefix):
    return _replace_with_another_graphs_checkpoint(prefix, lambda name, shape: [d + 1 for d in shape] if shape else shape)


@pytest.mark.parametrize("damage", [damage_missing_shard, damage_truncated_index, damage_corrupt_data,
                                    damage_state_file_ahead, damage_missing_index, damage_corrupt_index,
                                    damage_truncated_data, damage_another_graph_missing_variables,
                                    damage_another_graph_misshaped_variables],
                         ids=lambda d: d.__name__[len("damage_"):])
def test_a_damaged_version_is_never_served_and_is_picked_up_once_complete(rec_model, reference, batch, tmp_path,
                                                                         damage):
    model = rec_model.copy(tmp_path)
    (tmp_path / "staging").mkdir()
    good = model.prefixes()[-1]
    with processor.Processor(model.config(**FAST_POLL)) as p:
        expected = reference.predict(good, batch)["prob"]
        newer, repair = publish(model, tmp_path / "staging", seed=7, damage=damage)
        for _ in range(30):  # a while of polls: the damaged version never serves
            np.testing.assert_allclose(p.predict(batch)["prob"], expected, atol=1e-6)
            assert p.model_info().model_path == good
            threading.Event().wait(0.02)
        repair()
        wait_for(lambda: p.model_info().model_path == newer, timeout=60, what="the repaired version")
        np.testing.assert_allclose(p.predict(batch)["prob"], reference.predict(newer, batch)["prob"], atol=1e-6)


@pytest.mark.parametrize("damage, message", [
    (damage_truncated_index, "cannot load model version"),
    (damage_corrupt_index, "cannot load model version"),
    (damage_truncated_data, "cannot load model version"),
    (damage_another_graph_missing_variables, "not found in checkpoint"),
    (damage_another_graph_misshaped_variables, "shape"),
], ids=lambda d: getattr(d, "__name__", "")[len("damage_"):] or None)
def test_a_damaged_version_fails_update_with_a_clear_error_and_the_old_one_serves(rec_model, reference, batch,
                                                                                 tmp_path, damage, message):
    model = rec_model.copy(tmp_path)
    (tmp_path / "staging").mkdir()
    good = model.prefixes()[-1]
    with processor.Processor(model.config(poll_interval_seconds=0)) as p:
        newer, repair = publish(model, tmp_path / "staging", seed=11, damage=damage)
        with pytest.raises(processor.ModelLoadError) as error:
            p.update()
        assert newer in str(error.value) and message in str(error.value), str(error.value)
        assert p.model_info().model_path == good and p.model_info().updates_failed == 1
        np.testing.assert_allclose(p.predict(batch)["prob"], reference.predict(good, batch)["prob"], atol=1e-6)
        repair()
        assert p.update() is True  # a manual update retries at once
        assert p.model_info().model_path == newer


def test_failed_loads_are_counted_and_backed_off(rec_model, tmp_path, caplog):
    model = rec_model.copy(tmp_path)
    (tmp_path / "staging").mkdir()
    with processor.Processor(model.config(**FAST_POLL)) as p:
        newer, repair = publish(model, tmp_path / "staging", seed=3, damage=damage_corrupt_data)
        wait_for(lambda: p.model_info().updates_failed >= 1, what="a counted failure")
        threading.Event().wait(0.5)
        assert p.model_info().updates_failed == 1, "a failed version is retried only after its backoff"
        assert f"cannot load model version {newer}" in caplog.text and "retrying in 1 s" in caplog.text
        repair()
        wait_for(lambda: p.model_info().model_path == newer, timeout=60, what="the retried version")


def test_rollback_pins_until_a_newer_version_appears(rec_model, reference, batch, tmp_path):
    model = rec_model.copy(tmp_path)
    with processor.Processor(model.config(rollback_keep=3, **FAST_POLL)) as p:
        first = p.model_info().model_path
        second = new_version(model, seed=1)
        wait_for(lambda: p.model_info().model_path == second, what="second version")
        third = new_version(model, seed=2)
        wait_for(lambda: p.model_info().model_path == third, what="third version")
        steps = [int(x.rsplit("-", 1)[1]) for x in (first, second, third)]
        assert p.versions() == steps

        p.rollback()  # to the previous version
        info = p.model_info()
        assert info.model_path == second and info.pinned
        np.testing.assert_allclose(p.predict(batch)["prob"], reference.predict(second, batch)["prob"], atol=1e-6)
        p.rollback(steps[0])
        assert p.model_info().model_path == first
        threading.Event().wait(0.5)  # polls happen; the pin holds although `third` is newer
        assert p.model_info().model_path == first

        with pytest.raises(processor.RequestError) as error:
            p.rollback(999999)
        assert error.value.code == 400 and "not among the kept versions" in error.value.message

        fourth = new_version(model, seed=4)  # newer than anything seen: the pin lifts
        wait_for(lambda: p.model_info().model_path == fourth, what="the version after the pin")
        assert not p.model_info().pinned

        p.rollback()
        assert p.model_info().pinned
        assert p.unpin() is True
        assert p.model_info().model_path == fourth and not p.model_info().pinned


def test_rollback_keep_bounds_the_history(rec_model, tmp_path):
    model = rec_model.copy(tmp_path)
    with processor.Processor(model.config(rollback_keep=1, poll_interval_seconds=0)) as p:
        for seed in range(3):
            new_version(model, seed=seed)
            assert p.update()
        assert len(p.versions()) == 2  # the serving version and one earlier


def test_rollback_through_the_c_abi(rec_model, reference, batch, tmp_path):
    model = rec_model.copy(tmp_path)
    abi = CAbi()
    handle, state = abi.initialize(model.config(poll_interval_seconds=0))
    assert state == 0
    try:
        first = model.prefixes()[-1]
        newer = new_version(model, seed=5)
        assert processor.hosts.c_host._live[handle].update()
        assert abi.lib.rollback(handle, -1) == 200
        code, body = abi.process(handle, serialize(batch))
        assert code == 200
        np.testing.assert_allclose(prob_of(body), reference.predict(first, batch)["prob"], atol=1e-6)
        assert abi.lib.rollback(handle, 424242) == 400
        assert abi.lib.rollback(handle, int(newer.rsplit("-", 1)[1])) == 200
        np.testing.assert_allclose(prob_of(abi.process(handle, serialize(batch))[1]),
                                   reference.predict(newer, batch)["prob"], atol=1e-6)
        assert abi.lib.rollback(None, -1) == 503
    finally:
        abi.finalize(handle)


def test_rollback_to_a_deleted_version_keeps_serving(rec_model, tmp_path):
    model = rec_model.copy(tmp_path)
    with processor.Processor(model.config(poll_interval_seconds=0)) as p:
        first = p.model_info().model_path
        newer = new_version(model, seed=6)
        assert p.update()
        for name in os.listdir(model.checkpoint_dir):
            if name.startswith(os.path.basename(first) + "."):
                os.remove(os.path.join(model.checkpoint_dir, name))
        with pytest.raises(processor.ModelLoadError):
            p.rollback()
        assert p.model_info().model_path == newer and not p.model_info().pinned


def test_close_during_polling_and_during_an_update_releases_everything(rec_model, tmp_path):
    model = rec_model.copy(tmp_path)
    gc.collect()
    with processor.Processor(rec_model.config(poll_interval_seconds=0)) as observer:  # reads the metric
        baseline = loaded_versions(observer)
        for delay in (0.0, 0.01, 0.03, 0.08):
            p = processor.Processor(model.config(poll_interval_seconds=0.01))
            new_version(model, steps=1, seed=int(delay * 100))
            threading.Event().wait(delay)  # somewhere before, during or after the load
            p.close()
            assert p.process(b"")[0] == 503
            del p
        wait_for(lambda: gc.collect() is not None and loaded_versions(observer) == baseline, timeout=60,
                 what="every servable to be released")


@pytest.mark.parametrize("policy", ["availability_preserving", "resource_preserving"])
def test_a_checkpoint_of_another_graph_is_refused_before_it_serves(rec_model, reference, batch, tmp_path, policy):
    """TF's restore does not check the shapes of resource variables: without Processor's own check, a
    mis-shaped checkpoint would restore (in place, under resource_preserving) and every request fail."""
    model = rec_model.copy(tmp_path)
    (tmp_path / "staging").mkdir()
    good = model.prefixes()[-1]
    with processor.Processor(model.config(poll_interval_seconds=0, version_policy=policy)) as p:
        newer, _ = publish(model, tmp_path / "staging", seed=5, damage=damage_another_graph_misshaped_variables)
        with pytest.raises(processor.ModelLoadError) as error:
            p.update()
        assert "in the checkpoint but" in str(error.value) and "in the graph" in str(error.value)
        assert p.model_info().model_path == good
        np.testing.assert_allclose(p.predict(batch)["prob"], reference.predict(good, batch)["prob"], atol=1e-6)
