"""Local tables in two tiers (ev_storage_type 12, DeepRec's DRAM + SSDHASH): every row in files under
ev_storage_path, mapped and unlinked by the data plane, the hot rows in a DRAM tier of
ev_storage_size[0] bytes per table. Outputs are compared with TensorFlow's for the same checkpoint,
with a DRAM budget far below the tables so that most lookups go to disk and rows are evicted; deltas
and version switches must reach rows in either tier. EmbeddingVariables and Monolith tables in two
tiers: tests/test_deeprec_models.py, tests/test_feature_store_serving.py."""
from __future__ import annotations

import gc
import os
import re
import subprocess

import numpy as np
import pytest

import processor
import recommendation_model
from lifecycle_helpers import DeltaTrainer, wait_for
from processor.feature_store import tier_files

EMBEDDINGS_OF_REC = {"feature_store_type": "local", "embedding_min_rows": 1000}  # user (1000) and item (5000) rows
DRAM_BYTES = 4096  # per table: about 60 of the item table's 5,000 rows of 8 floats


def tiers(path, dram_bytes: int = DRAM_BYTES) -> dict:
    return {**EMBEDDINGS_OF_REC, "ev_storage_type": 12, "ev_storage_path": str(path), "ev_storage_size": [dram_bytes],
            "poll_interval_seconds": 0}


def tier_metrics(p) -> dict:
    """(metric name without prefix, table, tier or '') -> value, from p's Prometheus text."""
    values = {}
    for line in p.metrics().splitlines():
        if not line.startswith(":processor:feature_store_tier_"):
            continue
        name, value = line.rsplit(" ", 1)
        metric, labels = name[len(":processor:feature_store_tier_"):].split("{")
        fields = dict(item.split("=", 1) for item in labels.rstrip("}").split(","))
        values[(metric, fields["table"].strip('"'), fields.get("tier", '""').strip('"'))] = int(value)
    return values


def mapped_tier_files(path) -> int:
    """How many of this process's mappings are disk-tier files under `path` (unlinked: '(deleted)'),
    once what Python let go of is collected."""
    gc.collect()
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if str(path) in line and "(deleted)" in line)


def assert_outputs_equal(actual: dict, expected: dict) -> None:
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, rtol=0, atol=1e-6, err_msg=name)


def test_two_tiers_serve_tensorflows_outputs_from_a_small_dram_budget(rec_model, reference, tmp_path):
    storage = tmp_path / "ssd"
    rng = np.random.default_rng(7)
    prefix = rec_model.prefixes()[-1]
    with processor.Processor(rec_model.config(**tiers(storage))) as p:
        # the files have no names once open: a crash leaves nothing to serve; their mappings stay
        assert os.listdir(storage) == []
        assert mapped_tier_files(storage) >= 2
        for _ in range(20):
            batch = recommendation_model.random_batch(64, rng)
            assert_outputs_equal(p.predict(batch), reference.predict(prefix, batch))
        metrics = tier_metrics(p)
    assert set(table for _, table, _ in metrics) == {"user_embedding", "item_embedding"}
    item = {(metric, tier): value for (metric, table, tier), value in metrics.items() if table == "item_embedding"}
    # 20 batches x 64 ids x 2 gathers of the item table: from both tiers, evictions, within the budget
    assert item[("lookups", "dram")] > 0 and item[("lookups", "disk")] > 0
    assert item[("lookups", "dram")] + item[("lookups", "disk")] + item[("lookups", "absent")] == 20 * 64 * 2
    assert 0 < item[("bytes", "dram")] <= DRAM_BYTES
    assert item[("bytes", "disk")] >= 5000 * 8 * 4
    assert 0 < item[("dram_rows", "")] < 5000 / 10
    assert item[("evictions", "")] + item[("rejections", "")] > 0
    wait_for(lambda: mapped_tier_files(storage) == 0, timeout=10, what="the files unmapped after close()")


def test_a_delta_reaches_rows_in_either_tier(rec_model, tmp_path, batch):
    model = rec_model.copy(tmp_path)
    writer = DeltaTrainer(model)
    writer.trainer.restore(model.prefixes()[-1])
    writer.snapshot = writer.values()
    with processor.Processor(model.config(**tiers(tmp_path / "ssd"))) as p:
        for _ in range(3):  # the batch's rows now in DRAM: a delta must rewrite them there too
            p.predict(batch)
        delta = writer.train_and_save_delta(seed=3)
        assert p.update()
        assert p.model_info().delta_step == int(delta.rsplit("-", 1)[1])
        for _ in range(2):
            assert_outputs_equal(p.predict(batch), writer.trainer.predict(batch))


def test_a_new_version_gets_its_own_files_and_the_old_ones_are_freed(rec_model, reference, tmp_path, batch):
    """A full version imports into new files beside the serving ones and swaps; the old files are
    freed with the old version; a rollback imports the older version again."""
    model = rec_model.copy(tmp_path)
    storage = tmp_path / "ssd"
    writer = DeltaTrainer(model)
    old = model.prefixes()[-1]
    writer.trainer.restore(old)
    with processor.Processor(model.config(**tiers(storage))) as p:
        p.predict(batch)
        one_version = mapped_tier_files(storage)
        writer.trainer.train(3, seed=9)
        new = writer.save_full()
        assert p.update()
        assert p.model_info().model_path == new
        assert_outputs_equal(p.predict(batch), reference.predict(new, batch))
        wait_for(lambda: mapped_tier_files(storage) == one_version, what="the old version's files unmapped")
        assert os.listdir(storage) == []
        p.rollback(int(old.rsplit("-", 1)[1]))
        assert p.model_info().model_path == old
        assert_outputs_equal(p.predict(batch), reference.predict(old, batch))
        wait_for(lambda: mapped_tier_files(storage) == one_version, what="the newer version's files unmapped")


def test_a_crashed_imports_directory_is_removed_and_a_live_ones_kept(rec_model, tmp_path, batch):
    storage = tmp_path / "ssd"
    dead = storage / f"{tier_files.DIRECTORY_PREFIX}999999999-rec-v1-x"
    live = storage / f"{tier_files.DIRECTORY_PREFIX}{os.getppid()}-rec-v1-y"
    for directory in (dead, live):
        directory.mkdir(parents=True)
        (directory / "t0.rows").write_bytes(b"\0" * 64)
    with processor.Processor(rec_model.config(**tiers(storage))) as p:
        p.predict(batch)
        assert sorted(os.listdir(storage)) == [live.name]


@pytest.mark.parametrize("config, message", [
    ({"ev_storage_type": 12}, "'ev_storage_path': is required when ev_storage_type is 12 (DRAM_SSDHASH)"),
    ({"ev_storage_type": 12, "ev_storage_path": "oss://bucket/ssd"}, "'ev_storage_path': must be a local directory"),
])
def test_the_disk_tier_needs_a_local_directory(rec_model, config, message):
    with pytest.raises(processor.ConfigError, match=re.escape(message)):
        processor.parse_config(rec_model.config(**config))


@pytest.fixture
def small_disk(tmp_path):
    """A real file system of 320 KiB (tmpfs; mounting needs root): room for one version's tables (about
    200 KB), not for a second beside it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root (CI runs as root)")
    path = tmp_path / "small"
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("this machine does not allow mounting tmpfs")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_fails_the_next_version_and_the_serving_one_stays(rec_model, reference, tmp_path, batch,
                                                                        small_disk):
    model = rec_model.copy(tmp_path)
    writer = DeltaTrainer(model)
    old = model.prefixes()[-1]
    writer.trainer.restore(old)
    with processor.Processor(model.config(**tiers(small_disk))) as p:
        writer.trainer.train(3, seed=11)
        new = writer.save_full()
        with pytest.raises(processor.ModelLoadError, match="cannot write the disk tier under ev_storage_path .*: "
                                                           "the disk is full"):
            p.update()
        assert p.model_info().model_path == old
        assert_outputs_equal(p.predict(batch), reference.predict(old, batch))
        assert os.listdir(small_disk) == []  # the failed import's files are gone
        subprocess.run(["mount", "-o", "remount,size=2m", str(small_disk)], check=True)  # room again
        assert p.update()
        assert_outputs_equal(p.predict(batch), reference.predict(new, batch))


KILLED_IMPORT = """
import sys
import processor
processor.Processor({"savedmodel_dir": sys.argv[1], "feature_store_type": "local", "embedding_names": ["table"],
                     "ev_storage_type": 12, "ev_storage_path": sys.argv[2], "poll_interval_seconds": 0})
print("loaded", flush=True)
"""


def test_an_import_killed_midway_leaves_nothing_a_restart_serves(tmp_path):
    """A process killed (SIGKILL) while it writes the disk tier: the next start on the same path removes
    what it left and serves the checkpoint's rows, which TensorFlow gives."""
    import signal
    import sys
    import time
    from model_builders import build_lookup_model
    ids = np.array([0, 7, 199_999, 123_456], np.int64)
    expected = build_lookup_model(str(tmp_path / "model"), 200_000, 64, sample_ids=ids)  # 51 MB of rows
    storage = tmp_path / "ssd"
    child = subprocess.Popen([sys.executable, "-c", KILLED_IMPORT, str(tmp_path / "model"), str(storage)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        def writing() -> bool:  # its directory holds a rows file with some bytes in it
            return any(f.stat().st_size > 0 for d in storage.glob(f"{tier_files.DIRECTORY_PREFIX}*")
                       for f in d.iterdir())
        deadline = time.monotonic() + 60
        while not writing():
            assert child.poll() is None, "the child finished before it could be killed mid-import"
            assert time.monotonic() < deadline, "the child never started writing"
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    left = [d.name for d in storage.iterdir()]
    assert len(left) == 1 and left[0].startswith(f"{tier_files.DIRECTORY_PREFIX}{child.pid}-")
    config = {"savedmodel_dir": str(tmp_path / "model"), "feature_store_type": "local", "embedding_names": ["table"],
              "ev_storage_type": 12, "ev_storage_path": str(storage), "poll_interval_seconds": 0}
    with processor.Processor(config) as p:
        np.testing.assert_array_equal(p.predict({"ids": ids})["rows"], expected)
        assert os.listdir(storage) == []


@pytest.mark.parametrize("keys, message", [
    (np.arange(5, dtype=np.int64), "'emb-keys' holds shape [5] for 6 rows"),
    (np.arange(7, dtype=np.int64), "'emb-keys' holds shape [7] for 6 rows"),
])
def test_an_embedding_variables_keys_stream_beside_its_values(tmp_path, keys, message):
    """An EV's keys and values are read a block of each at a time (bounded memory at any size), ids of
    int32 or int64 keys alike; keys that do not match the rows in number are refused."""
    from processor import training
    from processor.feature_store.table_sources import EmbeddingVariableTable
    values = np.arange(24, dtype=np.float32).reshape(6, 4)
    training.save_tensors(str(tmp_path / "ok"), {"emb-keys": np.array([9, -1, 5, 2**40, 7, 3], np.int64),
                                                 "emb-values": values})
    training.save_tensors(str(tmp_path / "int32"), {"emb-keys": np.array([9, -1, 5, 8, 7, 3], np.int32),
                                                    "emb-values": values})
    blocks = list(EmbeddingVariableTable(str(tmp_path / "ok"), "emb").blocks(4))
    assert [ids.tolist() for ids, _ in blocks] == [[9, -1, 5, 2**40], [7, 3]]
    np.testing.assert_array_equal(np.concatenate([rows for _, rows in blocks]), values)
    assert [ids.dtype for ids, _ in EmbeddingVariableTable(str(tmp_path / "int32"), "emb").blocks(4)] == [np.int64] * 2
    training.save_tensors(str(tmp_path / "bad"), {"emb-keys": keys, "emb-values": values})
    with pytest.raises(processor.ModelLoadError, match=re.escape(message)):
        EmbeddingVariableTable(str(tmp_path / "bad"), "emb")
