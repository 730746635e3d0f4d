"""A versioned savedmodel_dir (<base>/<integer>/saved_model.pb): the newest complete version serves, and
a new one — even with another graph — is loaded and swapped in while serving."""
from __future__ import annotations

import os
import shutil
import threading
import time

import numpy as np
import pytest

import processor
from processor.loading.savedmodels import newest_savedmodel
import recommendation_model
from lifecycle_helpers import wait_for


def export(tmp_path, name, hidden_units, steps):
    model = recommendation_model.RecommendationModel(hidden_units=hidden_units)
    model.train(steps)
    path = model.export_savedmodel(str(tmp_path / "exports" / name))
    return model, path


def copy_partially(source, destination):
    """The graph and the variables index, but not the variables data: an export in progress."""
    os.makedirs(os.path.join(destination, "variables"))
    shutil.copy(os.path.join(source, "saved_model.pb"), destination)
    shutil.copy(os.path.join(source, "variables", "variables.index"), os.path.join(destination, "variables"))


def test_new_savedmodel_version_with_another_graph_is_swapped_in(tmp_path, batch):
    base = tmp_path / "models"
    first_model, first = export(tmp_path, "a", (32, 16), steps=2)
    second_model, second = export(tmp_path, "b", (8,), steps=4)
    shutil.copytree(first, base / "1")
    os.makedirs(base / "tmp-export-3")  # not an integer: ignored
    with processor.Processor({"savedmodel_dir": str(base), "poll_interval_seconds": 0.05}) as p:
        info = p.model_info()
        assert (info.savedmodel_version, info.savedmodel_dir, info.version_step) == (1, str(base / "1"), -1)
        np.testing.assert_allclose(p.predict(batch)["prob"], first_model.predict(batch)["prob"], atol=1e-6)

        copy_partially(second, base / "2")
        for _ in range(10):  # polls happen meanwhile; the incomplete version never serves
            assert p.model_info().savedmodel_version == 1
            np.testing.assert_allclose(p.predict(batch)["prob"], first_model.predict(batch)["prob"], atol=1e-6)
            time.sleep(0.02)
        shutil.copy(os.path.join(second, "variables", "variables.data-00000-of-00001"), base / "2" / "variables")
        wait_for(lambda: p.model_info().savedmodel_version == 2, what="SavedModel version 2")
        np.testing.assert_allclose(p.predict(batch)["prob"], second_model.predict(batch)["prob"], atol=1e-6)
        assert p.model_info().updates_applied == 1
    first_model.close()
    second_model.close()


def test_discovery_rules(tmp_path):
    assert newest_savedmodel(str(tmp_path)) is None
    os.makedirs(tmp_path / "7")
    (tmp_path / "7" / "saved_model.pb").write_bytes(b"")
    assert newest_savedmodel(str(tmp_path)) is None  # empty graph file: incomplete
    os.makedirs(tmp_path / "3")
    (tmp_path / "3" / "saved_model.pb").write_bytes(b"graph")
    assert newest_savedmodel(str(tmp_path)).version == 3
    (tmp_path / "saved_model.pb").write_bytes(b"graph")
    plain = newest_savedmodel(str(tmp_path))
    assert (plain.path, plain.version) == (str(tmp_path), -1)  # a SavedModel itself is not a base


def export_without_the_signature(path):
    """A SavedModel whose only signature is 'other' (the config serves 'serving_default')."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, shape=[None], name="x")
        y = tf.identity(x, name="y")
        with tf1.Session(graph=graph) as session:
            builder = tf1.saved_model.Builder(str(path))
            signature = tf1.saved_model.signature_def_utils.predict_signature_def(inputs={"x": x}, outputs={"y": y})
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"other": signature})
            builder.save()


def test_new_savedmodel_version_without_the_signature_fails_and_the_old_one_serves(tmp_path, batch):
    base = tmp_path / "models"
    first_model, first = export(tmp_path, "a", (16,), steps=2)
    shutil.copytree(first, base / "1")
    with processor.Processor({"savedmodel_dir": str(base), "poll_interval_seconds": 0}) as p:
        export_without_the_signature(base / "2")
        try:
            p.update()
            raise AssertionError("a version without the signature was served")
        except processor.ModelLoadError as error:
            assert str(base / "2") in str(error) and "'serving_default'" in str(error), str(error)
        info = p.model_info()
        assert (info.savedmodel_version, info.updates_failed) == (1, 1)
        np.testing.assert_allclose(p.predict(batch)["prob"], first_model.predict(batch)["prob"], atol=1e-6)
    first_model.close()


def arrive(source, destination, order: str, pause: float) -> None:
    """Copies a SavedModel the way copying tools leave it on the way: `order` says what is there for
    `pause` seconds before the rest arrives (cp -r, gsutil and hdfs dfs -get write saved_model.pb before
    variables/)."""
    variables = os.path.join(destination, "variables")
    os.makedirs(destination)
    if order != "empty_dir":
        shutil.copy(os.path.join(source, "saved_model.pb"), destination)
    if order == "empty_variables":
        os.makedirs(variables)
    if order == "index_first":
        os.makedirs(variables)
        shutil.copy(os.path.join(source, "variables", "variables.index"), variables)
    time.sleep(pause)
    if order == "empty_dir":
        shutil.copy(os.path.join(source, "saved_model.pb"), destination)
        time.sleep(pause)
    os.makedirs(variables, exist_ok=True)
    for name in sorted(os.listdir(os.path.join(source, "variables")), reverse=True):  # data before index
        shutil.copy(os.path.join(source, "variables", name), variables)


@pytest.mark.parametrize("order", ["graph_first", "empty_variables", "empty_dir", "index_first"])
def test_a_version_still_being_copied_never_serves_and_serves_once_whole(tmp_path, batch, order):
    """TF Serving #1086/#631: a version whose saved_model.pb arrived before its variables must not be
    loaded (TensorFlow's loader would skip the restore), and must serve as soon as it is whole."""
    base = tmp_path / "models"
    first_model, first = export(tmp_path, "a", (32, 16), steps=2)
    second_model, second = export(tmp_path, "b", (8,), steps=4)
    expected = [first_model.predict(batch)["prob"], second_model.predict(batch)["prob"]]
    shutil.copytree(first, base / "1")
    answers, failures = [], []
    stop = threading.Event()
    with processor.Processor({"savedmodel_dir": str(base), "poll_interval_seconds": 0.1}) as p:
        def client():
            while not stop.is_set():
                try:
                    answers.append(p.predict(batch)["prob"])
                except Exception as e:  # noqa: BLE001 - every failure is the test's finding
                    failures.append(repr(e))

        thread = threading.Thread(target=client)
        thread.start()
        try:
            arrive(second, str(base / "2"), order, pause=1.5)
            whole = time.monotonic()
            wait_for(lambda: p.model_info().savedmodel_version == 2, timeout=30, what="SavedModel version 2")
            took = time.monotonic() - whole
            time.sleep(0.3)
        finally:
            stop.set()
            thread.join()
        info = p.model_info()
    first_model.close()
    second_model.close()
    assert failures == [], failures[:3]
    versions = [next((i for i, e in enumerate(expected) if np.allclose(a, e, atol=1e-6)), -1) for a in answers]
    assert -1 not in versions and versions[-1] == 1 and len(answers) > 20
    assert versions == sorted(versions)  # version 1 until the swap, version 2 after: nothing else
    assert info.updates_failed == 0 and info.updates_applied == 1
    assert took < 5, f"version 2 served {took:.1f} s after its last file arrived"


def test_a_graph_with_variables_needs_its_variables(tmp_path, echo_model):
    """Discovery (local stores) and the data plane (every store) agree: a SavedModel whose graph has
    variables to restore is not whole without variables/variables.index; one without variables is."""
    model, source = export(tmp_path, "a", (8,), steps=1)
    model.close()
    base = tmp_path / "models"
    shutil.copytree(source, base / "4")
    shutil.rmtree(base / "4" / "variables")
    version = newest_savedmodel(str(base))
    assert version is None
    (base / "4" / "variables").mkdir()  # created empty, to be filled
    assert newest_savedmodel(str(base)) is None
    # with a checkpoint_dir the checkpoint is restored: the SavedModel's variables are not needed
    assert newest_savedmodel(str(base), restores_variables=False).version == 4
    shutil.copytree(echo_model, base / "5")  # no variables at all: whole as it is
    assert newest_savedmodel(str(base)).version == 5
    # the data plane refuses it too (a remote store's version is only checked there)
    with pytest.raises(processor.ModelLoadError, match=r"SavedModel '.*/4' has variables to restore but no "
                                                       r"variables/variables.index: an incomplete copy\?"):
        processor.Processor({"savedmodel_dir": str(base / "4"), "poll_interval_seconds": 0})


def test_savedmodel_version_pins_one_integer_version(tmp_path):
    """Config savedmodel_version (TF Serving's `specific` policy, one Processor per version): that
    version serves, a newer one is not swapped in, and a version that is not there fails with a message."""
    from model_builders import build_counting_model
    base = tmp_path / "counter"
    for version in (1, 2):
        build_counting_model(str(base / str(version)), 10 * version)
    with processor.Processor({"savedmodel_dir": str(base), "savedmodel_version": 1,
                              "poll_interval_seconds": 0.05}) as p:
        assert p.predict({"n": np.int64(1)})["tag"] == 10
        build_counting_model(str(base / "3"), 30)
        time.sleep(0.3)
        assert p.predict({"n": np.int64(1)})["tag"] == 10
        assert p.model_info().savedmodel_version == 1
    with pytest.raises(processor.ModelLoadError, match="no complete SavedModel version 7 in savedmodel_dir"):
        processor.Processor({"savedmodel_dir": str(base), "savedmodel_version": 7, "init_timeout_minutes": 0})
