"""Models served from OSS and HDFS: the real oss2 and fsspec WebHDFS clients against protocol-level
stand-ins on loopback (no OSS or HDFS service can run here; see standin_server.py). Discovery lists,
versions download into the local cache atomically, and every failure leaves the old version serving."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import processor
from lifecycle_helpers import DeltaTrainer, wait_for
from oss_standin import ACCESS_ID, ACCESS_KEY, BUCKET, CHECKPOINT_FILES
from webhdfs_standin import WebHdfsStandin

@pytest.fixture
def hdfs(tmp_path):
    server = WebHdfsStandin(str(tmp_path / "hdfs"), users=("serving",)).start()
    yield server
    server.stop()


def assert_serves(p, reference, batch, local_prefix):
    np.testing.assert_allclose(p.predict(batch)["prob"], reference.predict(local_prefix, batch)["prob"], atol=1e-6)


def test_directories_given_with_a_trailing_slash_as_deeprecs_docs_write_them(oss_model, reference, batch):
    with processor.Processor(oss_model.config(savedmodel_dir=f"oss://{BUCKET}/rec/saved_model/",
                                              checkpoint_dir=f"oss://{BUCKET}/rec/checkpoints/")) as p:
        assert_serves(p, reference, batch, oss_model.local.prefixes()[-1])


def test_oss_serves_the_newest_version_with_tensorflows_outputs(oss_model, reference, batch):
    with processor.Processor(oss_model.config()) as p:
        newest = oss_model.local.prefixes()[-1]
        info = p.model_info()
        assert info.model_path == oss_model.remote(newest)  # the store's path, not the cache's
        assert info.savedmodel_dir == f"oss://{BUCKET}/rec/saved_model"
        assert_serves(p, reference, batch, newest)
        assert oss_model.cached_versions() == ["model.ckpt-20", "saved_model"]
        # a newer version: downloaded, loaded, swapped
        newer = oss_model.train(seed=1)
        oss_model.upload_checkpoints()
        assert p.update() is True
        assert p.model_info().model_path == newer
        assert_serves(p, reference, batch, oss_model.local_prefix(newer))


def test_polling_a_remote_store_lists_and_reads_nothing_else(oss_model, oss):
    """A poll with nothing new costs one list call per root and no GET; a changed state file costs one
    GET; listing pages through 1,000 keys a call."""
    with processor.Processor(oss_model.config()) as p:
        assert p.config.effective_poll_interval == 0
        lists, gets = oss.count("list"), oss.count("get")
        for _ in range(5):
            assert p.update() is False
        assert (oss.count("list") - lists, oss.count("get") - gets) == (10, 0)  # saved_model + checkpoints

        for i in range(2100):  # training logs beside the checkpoints
            oss.put(BUCKET, f"rec/checkpoints/events/{i:05d}", b"")
        objects = len([k for k in oss.keys(BUCKET) if k.startswith("rec/checkpoints/")])
        lists = oss.count("list")
        assert p.update() is False
        assert oss.count("list") - lists == math.ceil(objects / 1000) + 1
        newer = oss_model.train(seed=2)
        oss_model.upload_checkpoints()
        gets = oss.count("get")
        assert p.update() is True and p.model_info().model_path == newer
        assert oss.count("get") - gets == 3  # the state file, the index, the data shard


def test_deltas_on_oss_are_downloaded_applied_and_not_kept(oss_model, oss, batch):
    writer = DeltaTrainer(oss_model.local)
    writer.trainer.restore(oss_model.local.prefixes()[-1])  # the trainer goes on from the served version
    writer.snapshot = writer.values()
    with processor.Processor(oss_model.config()) as p:
        delta = writer.train_and_save_delta(seed=11)
        oss_model.upload_checkpoints()
        assert p.update() is True
        assert p.model_info().delta_step == int(delta.rsplit("-", 1)[1])
        np.testing.assert_allclose(p.predict(batch)["prob"], writer.trainer.predict(batch)["prob"], atol=1e-6)
        assert f"{BUCKET}/rec/checkpoints/.incremental_checkpoint/{os.path.basename(delta)}.index" in \
            [path for op, path in oss.requests if op == "get"]
        assert oss_model.cached_versions() == ["model.ckpt-20", "saved_model"]  # applied, then freed


def test_oss_credentials_from_the_environment(oss_model, monkeypatch, reference, batch):
    monkeypatch.setenv("OSS_ENDPOINT", oss_model.server.endpoint)
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", ACCESS_ID)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", ACCESS_KEY)
    config = {k: v for k, v in oss_model.config().items() if not k.startswith("oss_")}
    with processor.Processor(config) as p:
        assert_serves(p, reference, batch, oss_model.local.prefixes()[-1])


def test_remote_default_poll_interval_is_60_seconds(oss_model):
    config = dict(oss_model.config())
    del config["poll_interval_seconds"]
    assert processor.parse_config(config).effective_poll_interval == 60.0


def test_a_version_appearing_mid_upload_is_not_served_until_complete(oss_model, reference, batch):
    with processor.Processor(oss_model.config(poll_interval_seconds=0.05)) as p:
        serving = p.model_info().model_path
        newer = oss_model.train(seed=3)
        oss_model.upload_checkpoints(only=("checkpoint", ".index"))  # the state file and index, not the data
        with contextlib.suppress(AssertionError):
            wait_for(lambda: p.model_info().model_path != serving, timeout=1.0)
        assert p.model_info().model_path == serving and p.model_info().updates_failed == 0
        oss_model.upload_checkpoints(only=(".data-",))
        wait_for(lambda: p.model_info().model_path == newer, what="the completed version")
        assert_serves(p, reference, batch, oss_model.local_prefix(newer))


def test_network_errors_during_a_download_are_retried_from_where_they_stopped(oss_model, oss, reference, batch):
    with processor.Processor(oss_model.config()) as p:
        newer = oss_model.train(seed=4)
        oss_model.upload_checkpoints()
        shard = newer.split(f"oss://{BUCKET}/")[1] + ".data-00000-of-00001"
        # The ~400 KB shard breaks off after 300 KB: the client has whole 256 KiB chunks to keep.
        oss.inject("get", shard, "truncate")
        oss.inject("get-range", shard, "reset")       # the resumed range read fails once more
        assert p.update() is True
        assert_serves(p, reference, batch, oss_model.local_prefix(newer))
    reads = [op for op, path in oss.requests if path == f"{BUCKET}/{shard}"]
    assert reads == ["get", "get-range", "get-range"]  # the retries read the rest, not the whole object


def test_a_failing_download_keeps_the_old_version_and_leaves_no_partial_copy(oss_model, oss, reference, batch):
    with processor.Processor(oss_model.config(download_retries=2)) as p:
        serving = oss_model.local.prefixes()[-1]
        newer = oss_model.train(seed=5)
        oss_model.upload_checkpoints()
        shard = newer.split(f"oss://{BUCKET}/")[1] + ".data-00000-of-00001"
        oss.inject("get", shard, "reset", times=1)
        oss.inject("get", shard, "500", times=2)
        with pytest.raises(processor.ModelLoadError) as error:
            p.update()
        assert f"cannot download {newer}" in str(error.value)
        assert "OSS download" in str(error.value) and "500 InternalError" in str(error.value)
        assert p.model_info().model_path == oss_model.remote(serving) and p.model_info().updates_failed == 1
        assert_serves(p, reference, batch, serving)
        assert oss_model.cached_versions() == ["model.ckpt-20", "saved_model"]  # nothing partial left
        assert p.update() is True  # the store answers again
        assert_serves(p, reference, batch, oss_model.local_prefix(newer))


@pytest.mark.parametrize("access_id,access_key,code", [
    (ACCESS_ID, "wrong-key-3141", "SignatureDoesNotMatch"),
    ("wrong-id-2718", ACCESS_KEY, "InvalidAccessKeyId"),
])
def test_wrong_credentials_are_a_clear_error_that_shows_no_secret(oss_model, access_id, access_key, code, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(processor.ModelLoadError) as error:
        processor.Processor(oss_model.config(oss_access_id=access_id, oss_access_key=access_key))
    message = str(error.value)
    assert f"OSS list oss://{BUCKET}/rec/" in message and f"403 {code}" in message
    assert "check oss_access_id and oss_access_key" in message
    for secret in (access_id, access_key):
        assert secret not in message and secret not in caplog.text


def test_a_served_oss_model_shows_no_credentials(oss_model, batch, caplog):
    """oss2 logs signed request headers at DEBUG; Processor masks them. Nothing else shows them either."""
    caplog.set_level(logging.DEBUG)
    with processor.Processor(oss_model.config()) as p:
        p.update()
        shown = [repr(p.config), str(p.model_info()), p.serving_model_info()[1].decode("utf-8", "replace"),
                 p.metrics(), str(p.predict(batch))]
    assert "Send request" in caplog.text  # the SDK did log its requests
    for text in [caplog.text, *shown]:
        assert ACCESS_ID not in text and ACCESS_KEY not in text


def test_rollback_works_while_the_store_is_unreachable(oss_model, reference, batch):
    with processor.Processor(oss_model.config()) as p:
        first = oss_model.local.prefixes()[-1]
        oss_model.train(seed=12)
        oss_model.upload_checkpoints()
        assert p.update() is True
        oss_model.server.inject("list", "", "reset", times=100)
        p.rollback()  # from the cache
        assert p.model_info().model_path == oss_model.remote(first) and p.model_info().pinned
        assert_serves(p, reference, batch, first)
        assert p._lifecycle.update(raise_errors=False) is False  # a poll that cannot list keeps serving


def test_cache_keeps_rollback_keep_versions_and_rollback_loads_from_it(oss_model, oss, reference, batch):
    with processor.Processor(oss_model.config(rollback_keep=1)) as p:
        first = oss_model.local.prefixes()[-1]
        oss_model.train(seed=6)  # a second version, between the first and the third
        third = oss_model.train(seed=7)
        oss_model.upload_checkpoints()
        assert p.update() is True and p.model_info().model_path == third
        assert oss_model.cached_versions() == sorted([os.path.basename(first), os.path.basename(third), "saved_model"])
        gets = oss.count("get")
        p.rollback()
        assert oss.count("get") == gets  # served from the cache
        assert p.model_info().model_path == oss_model.remote(first)
        assert_serves(p, reference, batch, first)


def test_a_restart_reuses_the_cache(oss_model, oss):
    with processor.Processor(oss_model.config()):
        pass
    downloads = [path for op, path in oss.requests if op == "get" and not path.endswith("/checkpoint")]
    with processor.Processor(oss_model.config()):
        again = [path for op, path in oss.requests if op == "get" and not path.endswith("/checkpoint")]
    assert downloads and again == downloads  # nothing downloaded the second time


def test_two_processes_with_one_cache_dir_do_not_share_it(oss_model):
    with processor.Processor(oss_model.config()) as first, processor.Processor(oss_model.config()) as second:
        assert first._loader.cache.directory != second._loader.cache.directory
        private = second._loader.cache.directory
        assert second.model_info().model_path == first.model_info().model_path
    assert not os.path.exists(private)  # the private copy goes with its processor


# ---- a full disk while caching (tmpfs of a fixed size as local_cache_dir)


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a 2 MiB tmpfs to fill (needs root): {result.stderr.strip()}")
    yield str(mount_point)
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: str, leave_free: int) -> str:
    path = os.path.join(directory, "filler")
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    with open(path, "ab") as f:
        f.write(b"\0" * max(free - leave_free, 0))
    return path


def test_a_disk_too_small_for_a_version_is_named_before_downloading(oss_model, small_disk, reference, batch):
    with processor.Processor(oss_model.config(local_cache_dir=small_disk)) as p:
        serving = oss_model.local.prefixes()[-1]
        newer = oss_model.train(seed=8)
        oss_model.upload_checkpoints()
        filler = fill(small_disk, leave_free=64 << 10)
        with pytest.raises(processor.ModelLoadError) as error:
            p.update()
        assert f"cannot cache {newer}: local_cache_dir" in str(error.value) and "bytes free" in str(error.value)
        assert_serves(p, reference, batch, serving)
        os.remove(filler)
        assert p.update() is True
        assert_serves(p, reference, batch, oss_model.local_prefix(newer))


def test_the_disk_filling_up_mid_download_keeps_the_old_version(oss_model, oss, small_disk, reference, batch):
    with processor.Processor(oss_model.config(local_cache_dir=small_disk)) as p:
        serving = oss_model.local.prefixes()[-1]
        newer = oss_model.train(seed=9)
        oss_model.upload_checkpoints()
        shard = newer.split(f"oss://{BUCKET}/")[1] + ".data-00000-of-00001"
        filled = []
        oss.inject("get", shard, "call", call=lambda: filled.append(fill(small_disk, leave_free=32 << 10)))
        with pytest.raises(processor.ModelLoadError) as error:
            p.update()
        assert str(error.value).startswith(f"cannot cache {newer} in local_cache_dir")
        assert str(error.value).endswith("no space left on device")
        assert p.model_info().updates_failed == 1
        assert_serves(p, reference, batch, serving)
        assert not [n for n in os.listdir(p._loader.cache.directory) if n.startswith(".partial-")]
        os.remove(filled[0])
        assert p.update() is True
        assert_serves(p, reference, batch, oss_model.local_prefix(newer))


# ---- HDFS over WebHDFS


def hdfs_config(server: WebHdfsStandin, tmp_path, **overrides) -> dict:
    return {"model_store_type": "hdfs", "savedmodel_dir": "hdfs://namenode:8020/models/rec/saved_model",
            "checkpoint_dir": "hdfs://namenode:8020/models/rec/checkpoints", "webhdfs_url": server.url,
            "hdfs_user": "serving", "local_cache_dir": str(tmp_path / "cache"), "poll_interval_seconds": 0,
            **overrides}


def test_hdfs_serves_and_updates_with_tensorflows_outputs(rec_model, hdfs, tmp_path, reference, batch):
    local = rec_model.copy(tmp_path / "local")
    hdfs.upload_tree(local.savedmodel_dir, "/models/rec/saved_model")
    hdfs.upload_tree(local.checkpoint_dir, "/models/rec/checkpoints", CHECKPOINT_FILES)
    with processor.Processor(hdfs_config(hdfs, tmp_path)) as p:
        assert p.model_info().model_path == "hdfs://namenode:8020/models/rec/checkpoints/model.ckpt-20"
        assert_serves(p, reference, batch, local.prefixes()[-1])
        local.trainer.train(3, seed=10)
        newer = local.trainer.save_checkpoint(local.checkpoint_dir)
        hdfs.upload_tree(local.checkpoint_dir, "/models/rec/checkpoints", CHECKPOINT_FILES)
        hdfs.inject("DATANODE_READ", os.path.basename(newer) + ".data", "truncate")  # retried
        assert p.update() is True
        assert p.model_info().model_path.endswith(os.path.basename(newer))
        assert_serves(p, reference, batch, newer)


def test_hdfs_denied_user_and_missing_directory_are_clear_errors(rec_model, hdfs, tmp_path):
    with pytest.raises(processor.ModelLoadError) as error:
        processor.Processor(hdfs_config(hdfs, tmp_path, hdfs_user="mallory"))
    assert "AccessControlException: Permission denied: user=mallory" in str(error.value)
    assert "check hdfs_user" in str(error.value)
    with pytest.raises(processor.ModelLoadError) as error:
        processor.Processor({**hdfs_config(hdfs, tmp_path), "init_timeout_minutes": 0})
    assert "no SavedModel in savedmodel_dir 'hdfs://namenode:8020/models/rec/saved_model'" in str(error.value)


def test_an_unreachable_store_is_a_clear_error(tmp_path):
    with pytest.raises(processor.ModelLoadError) as error:
        processor.Processor({"model_store_type": "hdfs", "savedmodel_dir": "hdfs://nn/sm",
                             "webhdfs_url": "http://127.0.0.1:9", "local_cache_dir": str(tmp_path)})
    assert str(error.value).startswith("WebHDFS list hdfs://nn/sm: network error: ConnectionError")


def test_a_local_store_never_loads_openssl(rec_model):
    """A host that links TensorFlow itself has TF's BoringSSL symbols in its global scope, and OpenSSL
    loaded after them crashes (benchmarks/native/latency_bench.cc is such a host). Only remote stores,
    which need hashing and HTTPS, may load it."""
    script = ("import json, sys, processor\n"
              f"p = processor.Processor(json.loads({json.dumps(json.dumps(rec_model.config(poll_interval_seconds=0)))}))\n"
              "p.update(); p.close()\n"
              "print(sorted(m for m in ('_hashlib', '_ssl') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
