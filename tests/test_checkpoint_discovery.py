"""Which checkpoint is served: only complete versions a state file names, the highest step first."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import processor
from processor.loading.checkpoints import check_version, list_versions, newest_version
from processor.stores import LocalModelStore


def write_version(directory, step, shards=1, index=b"index-bytes", state=True, extra_state=()):
    os.makedirs(directory, exist_ok=True)
    prefix = os.path.join(directory, f"model.ckpt-{step}")
    with open(prefix + ".index", "wb") as f:
        f.write(index)
    for i in range(shards):
        with open(f"{prefix}.data-{i:05d}-of-{shards:05d}", "wb") as f:
            f.write(b"data")
    if state:
        names = list(extra_state) + [f"model.ckpt-{step}"]
        lines = [f'model_checkpoint_path: "{names[-1]}"'] + [f'all_model_checkpoint_paths: "{n}"' for n in names]
        with open(os.path.join(directory, "checkpoint"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return prefix


def test_direct_layout_picks_highest_complete_step(tmp_path):
    write_version(tmp_path, 100)
    write_version(tmp_path, 300, shards=3, extra_state=["model.ckpt-100"])
    assert newest_version(str(tmp_path)).prefix == str(tmp_path / "model.ckpt-300")
    assert [v.step for v in list_versions(LocalModelStore(), str(tmp_path))] == [100, 300]


def test_missing_shard_is_skipped(tmp_path):
    write_version(tmp_path, 100)
    prefix = write_version(tmp_path, 200, shards=2, extra_state=["model.ckpt-100"])
    os.remove(prefix + ".data-00001-of-00002")
    version = check_version(LocalModelStore(), prefix)
    assert not version.complete and "data shard model.ckpt-200.data-00001-of-00002 is missing" in version.reason
    assert newest_version(str(tmp_path)).step == 100


@pytest.mark.parametrize("damage,reason", [
    (lambda p: os.remove(p + ".index"), "index is missing"),
    (lambda p: open(p + ".index", "wb").close(), "is empty"),
    (lambda p: os.remove(p + ".data-00000-of-00001"), "no data shards"),
])
def test_incomplete_versions_are_never_chosen(tmp_path, damage, reason):
    write_version(tmp_path, 100)
    prefix = write_version(tmp_path, 200, extra_state=["model.ckpt-100"])
    damage(prefix)
    assert reason in check_version(LocalModelStore(), prefix).reason
    assert newest_version(str(tmp_path)).step == 100


def test_state_file_naming_a_missing_prefix(tmp_path):
    write_version(tmp_path, 100)
    with open(tmp_path / "checkpoint", "a") as f:
        f.write('model_checkpoint_path: "model.ckpt-999"\n')
    assert newest_version(str(tmp_path)).step == 100


def test_files_no_state_file_names_are_ignored(tmp_path):
    write_version(tmp_path, 100)
    write_version(tmp_path, 500, state=False)  # a newer stray version: not named, never served
    (tmp_path / "model.ckpt-900.index.tempstate123").write_bytes(b"x")
    assert newest_version(str(tmp_path)).step == 100


def test_run_directories_newest_step_wins(tmp_path):
    write_version(tmp_path / "run_a", 100)
    write_version(tmp_path / "run_b", 700)
    write_version(tmp_path / "run_c", 400)
    assert newest_version(str(tmp_path)).prefix == str(tmp_path / "run_b" / "model.ckpt-700")


def test_absolute_paths_in_state_file(tmp_path):
    prefix = write_version(tmp_path / "data", 42, state=False)
    (tmp_path / "checkpoint").write_text(f'model_checkpoint_path: "{prefix}"\n')
    assert newest_version(str(tmp_path)).prefix == prefix


def test_empty_or_missing_dir_has_no_version(tmp_path):
    assert newest_version(str(tmp_path)) is None
    assert newest_version(str(tmp_path / "nope")) is None


def test_processor_refuses_a_dir_without_complete_version(rec_model, tmp_path):
    os.makedirs(tmp_path / "ckpt")
    with pytest.raises(processor.ModelLoadError) as error:
        processor.Processor(rec_model.config(checkpoint_dir=str(tmp_path / "ckpt"), init_timeout_minutes=0))
    assert "no complete checkpoint under checkpoint_dir" in str(error.value)


def test_processor_serves_the_newer_run_dir(rec_model, reference, batch, tmp_path):
    prefixes = rec_model.prefixes()
    older, newer = tmp_path / "ckpt" / "run1", tmp_path / "ckpt" / "run2"
    for directory, prefix in ((older, prefixes[0]), (newer, prefixes[1])):
        os.makedirs(directory)
        for name in os.listdir(rec_model.checkpoint_dir):
            if name.startswith(os.path.basename(prefix) + "."):
                shutil.copy(os.path.join(rec_model.checkpoint_dir, name), directory)
        (directory / "checkpoint").write_text(f'model_checkpoint_path: "{os.path.basename(prefix)}"\n')
    with processor.Processor(rec_model.config(checkpoint_dir=str(tmp_path / "ckpt"))) as p:
        assert p.model_info().model_path == str(newer / os.path.basename(prefixes[1]))
        np.testing.assert_allclose(p.predict(batch)["prob"], reference.predict(prefixes[1], batch)["prob"], atol=1e-5)


def test_bad_checkpoint_fails_load_with_a_clear_error(rec_model, tmp_path):
    model = rec_model.copy(tmp_path)
    newest = model.prefixes()[-1]
    with open(newest + ".data-00000-of-00001", "r+b") as f:
        f.truncate(10)
    with pytest.raises(processor.ModelLoadError) as error:
        processor.Processor(model.config())
    assert f"cannot load model version {newest}" in str(error.value)
    assert "cannot restore checkpoint" in str(error.value)


def test_a_tree_copied_from_the_training_machine_is_found(tmp_path, caplog):
    """State files hold the training machine's absolute paths; the copy has the same files elsewhere."""
    trained = tmp_path / "train" / "ckpt"
    write_version(trained, 100)
    write_version(trained, 200, extra_state=["model.ckpt-100"])
    (trained / "checkpoint").write_text("".join(f'{key}: "{trained}/model.ckpt-{step}"\n' for key, step in
                                                (("model_checkpoint_path", 200), ("all_model_checkpoint_paths", 100),
                                                 ("all_model_checkpoint_paths", 200))))
    served = tmp_path / "serve" / "ckpt"
    shutil.copytree(trained, served)
    shutil.rmtree(tmp_path / "train")
    caplog.set_level("INFO", logger="processor.loading.checkpoints")
    assert newest_version(str(served)).prefix == str(served / "model.ckpt-200")
    assert [v.step for v in list_versions(LocalModelStore(), str(served))] == [100, 200]
    assert f"names {trained}/model.ckpt-200, which is not there: using {served}/model.ckpt-200" in caplog.text


def test_without_a_state_file_naming_what_is_there_the_complete_checkpoints_held_are_offered(tmp_path, caplog):
    caplog.set_level("INFO", logger="processor.loading.checkpoints")
    write_version(tmp_path, 100, state=False)
    prefix = write_version(tmp_path, 300, shards=2, state=False)
    os.remove(prefix + ".data-00001-of-00002")  # incomplete: not offered
    assert newest_version(str(tmp_path)).step == 100
    assert "it has no checkpoint state file: offering the complete checkpoints it holds (model.ckpt-100)" in caplog.text
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "/training/host/model.ckpt-999"\n')
    assert newest_version(str(tmp_path)).step == 100
    assert "its state file names only files that are not there (/training/host/model.ckpt-999)" in caplog.text


def test_processor_serves_a_relocated_checkpoint_tree(rec_model, reference, batch, tmp_path):
    trained = tmp_path / "train"
    model = rec_model.copy(trained)  # its state file names trained/checkpoints/... absolutely
    assert str(trained) in (trained / "checkpoints" / "checkpoint").read_text()
    newest = str(tmp_path / "serve" / "checkpoints" / os.path.basename(model.prefixes()[-1]))
    shutil.copytree(trained, tmp_path / "serve")
    shutil.rmtree(trained)
    with processor.Processor(rec_model.config(savedmodel_dir=str(tmp_path / "serve" / "saved_model"),
                                              checkpoint_dir=str(tmp_path / "serve" / "checkpoints"))) as p:
        assert p.model_info().model_path == newest
        np.testing.assert_allclose(p.predict(batch)["prob"], reference.predict(newest, batch)["prob"], atol=1e-5)


def test_initialize_waits_for_a_first_version(rec_model, reference, batch, tmp_path, caplog):
    """DeepRec's init_timeout_minutes: -1 (the default) waits as long as it takes, N minutes at most."""
    import threading
    import time
    checkpoints = tmp_path / "ckpt"
    checkpoints.mkdir()
    caplog.set_level("INFO", logger="processor.lifecycle")
    with pytest.raises(processor.ModelLoadError) as error:
        processor.Processor(rec_model.config(checkpoint_dir=str(checkpoints), init_timeout_minutes=0.01,
                                             poll_interval_seconds=0.1))
    assert str(error.value).startswith(f"no complete checkpoint under checkpoint_dir '{checkpoints}'")
    assert str(error.value).endswith("(waited 0.01 min, init_timeout_minutes)")

    prefix = rec_model.prefixes()[-1]
    started = time.monotonic()

    def publish():
        time.sleep(1.5)
        for name in os.listdir(rec_model.checkpoint_dir):
            if name.startswith(os.path.basename(prefix) + "."):
                shutil.copy(os.path.join(rec_model.checkpoint_dir, name), checkpoints)
        (checkpoints / "checkpoint").write_text(f'model_checkpoint_path: "{os.path.basename(prefix)}"\n')

    publisher = threading.Thread(target=publish)
    publisher.start()
    with processor.Processor(rec_model.config(checkpoint_dir=str(checkpoints), poll_interval_seconds=0.1)) as p:
        waited = time.monotonic() - started
        publisher.join()
        assert p.model_info().model_path == str(checkpoints / os.path.basename(prefix))
        np.testing.assert_allclose(p.predict(batch)["prob"], reference.predict(prefix, batch)["prob"], atol=1e-5)
    assert 1.5 <= waited < 10
    assert "waiting for a version to serve (as long as it takes, init_timeout_minutes): no complete checkpoint" \
        in caplog.text
