"""version_policy "resource_preserving": never two versions in memory; in-place restores for the same
graph, unload-then-load for another; the previous version comes back when an update fails."""
from __future__ import annotations

import gc
import shutil

import numpy as np
import pytest

import processor
from lifecycle_helpers import loaded_versions
from test_lifecycle import damage_corrupt_data, publish
from test_savedmodel_versions import export

POLICY = {"version_policy": "resource_preserving", "poll_interval_seconds": 0}


def test_same_graph_restores_in_place(rec_model, reference, batch, tmp_path):
    model = rec_model.copy(tmp_path)
    gc.collect()
    with processor.Processor(model.config(**POLICY)) as p:
        serving = loaded_versions(p)  # this processor's version and any other in the process
        model.trainer.train(3, seed=1)
        newer = model.trainer.save_checkpoint(model.checkpoint_dir)
        assert p.update()
        assert loaded_versions(p) == serving  # the same servable, restored in place
        assert p.model_info().model_path == newer and p.model_info().updates_applied == 1
        np.testing.assert_allclose(p.predict(batch)["prob"], reference.predict(newer, batch)["prob"], atol=1e-6)


def test_failed_in_place_restore_brings_the_previous_version_back(rec_model, reference, batch, tmp_path):
    model = rec_model.copy(tmp_path)
    (tmp_path / "staging").mkdir()
    with processor.Processor(model.config(**POLICY)) as p:
        serving = p.model_info().model_path
        publish(model, tmp_path / "staging", seed=2, damage=damage_corrupt_data)
        with pytest.raises(processor.ModelLoadError, match="in place"):
            p.update()
        info = p.model_info()
        assert info.model_path == serving and info.updates_failed == 1
        np.testing.assert_allclose(p.predict(batch)["prob"], reference.predict(serving, batch)["prob"], atol=1e-6)


def test_another_graph_is_unloaded_then_loaded(tmp_path, batch):
    base = tmp_path / "models"
    first_model, first = export(tmp_path, "a", (32, 16), steps=2)
    second_model, second = export(tmp_path, "b", (8,), steps=3)
    shutil.copytree(first, base / "1")
    gc.collect()
    with processor.Processor({"savedmodel_dir": str(base), **POLICY}) as p:
        serving = loaded_versions(p)  # this processor's version and any other in the process
        shutil.copytree(second, base / "2")
        assert p.update()
        assert loaded_versions(p) == serving  # the first was freed before the second loaded
        assert p.model_info().savedmodel_version == 2
        np.testing.assert_allclose(p.predict(batch)["prob"], second_model.predict(batch)["prob"], atol=1e-6)
        # a broken third version: unloaded, fails, and version 2 comes back
        shutil.copytree(second, base / "3")
        with open(base / "3" / "saved_model.pb", "r+b") as f:
            f.truncate(100)
        with pytest.raises(processor.ModelLoadError):
            p.update()
        assert p.model_info().savedmodel_version == 2
        np.testing.assert_allclose(p.predict(batch)["prob"], second_model.predict(batch)["prob"], atol=1e-6)
    first_model.close()
    second_model.close()


def test_rollback_also_restores_in_place(rec_model, reference, batch, tmp_path):
    model = rec_model.copy(tmp_path)
    gc.collect()
    with processor.Processor(model.config(**POLICY)) as p:
        serving = loaded_versions(p)  # this processor's version and any other in the process
        first = p.model_info().model_path
        model.trainer.train(3, seed=8)
        model.trainer.save_checkpoint(model.checkpoint_dir)
        assert p.update()
        p.rollback()
        assert loaded_versions(p) == serving
        info = p.model_info()
        assert info.model_path == first and info.pinned
        np.testing.assert_allclose(p.predict(batch)["prob"], reference.predict(first, batch)["prob"], atol=1e-6)
