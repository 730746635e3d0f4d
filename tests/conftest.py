"""Shared fixtures: real TensorFlow models built by the tests, and TensorFlow's own answers for them."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests"))

import recommendation_model  # noqa: E402
from model_builders import build_echo_model  # noqa: E402
from oss_standin import BUCKET, OssModel, OssStandin  # noqa: E402
from redis_servers import RedisClusterOfThree, RedisServer  # noqa: E402


class BuiltModel:
    def __init__(self, root: Path, dirs, trainer):
        self.root = root
        self.savedmodel_dir = dirs.savedmodel_dir
        self.checkpoint_dir = dirs.checkpoint_dir
        self.trainer = trainer  # the training session, to write more versions

    def config(self, **overrides) -> dict:
        return {"savedmodel_dir": self.savedmodel_dir, "checkpoint_dir": self.checkpoint_dir, **overrides}

    def prefixes(self):
        steps = sorted(int(p.split("-")[-1].split(".")[0]) for p in os.listdir(self.checkpoint_dir)
                       if p.endswith(".index"))
        return [os.path.join(self.checkpoint_dir, f"model.ckpt-{s}") for s in steps]

    def copy(self, destination: Path) -> "BuiltModel":
        """A private copy to add or break versions in."""
        shutil.copytree(self.savedmodel_dir, destination / "saved_model")
        shutil.copytree(self.checkpoint_dir, destination / "checkpoints")
        # state files hold absolute paths: rewrite them for the copy
        state = destination / "checkpoints" / "checkpoint"
        state.write_text(state.read_text().replace(self.checkpoint_dir, str(destination / "checkpoints")))
        dirs = recommendation_model.ModelDirs(str(destination / "saved_model"), str(destination / "checkpoints"))
        return BuiltModel(destination, dirs, self.trainer)


@pytest.fixture(scope="session")
def rec_model(tmp_path_factory) -> BuiltModel:
    root = tmp_path_factory.mktemp("rec_model")
    # One trainer writes into many test directories: it must not delete old checkpoints (max_to_keep)
    # wherever it wrote them, or later tests would copy state files naming deleted versions.
    dirs, trainer = recommendation_model.build(str(root), steps_per_version=10, versions=2, max_to_keep=None)
    return BuiltModel(root, dirs, trainer)


class Reference:
    """TensorFlow's Python answers for a checkpoint (its own graph and session, restored per prefix)."""

    def __init__(self):
        self.model = recommendation_model.RecommendationModel()

    def predict(self, prefix: str, inputs: dict, outputs=("prob", "logits", "item_vector")) -> dict:
        self.model.restore(prefix)
        return self.model.predict(inputs, list(outputs))


@pytest.fixture(scope="session")
def reference() -> Reference:
    return Reference()


@pytest.fixture(scope="session")
def echo_model(tmp_path_factory) -> str:
    return build_echo_model(str(tmp_path_factory.mktemp("echo") / "saved_model"))


@pytest.fixture
def batch():
    return recommendation_model.random_batch(6, np.random.default_rng(42))


# Real redis-server processes (tests/redis_servers.py), one per test module that asks for them.
@pytest.fixture
def fresh_config_log(monkeypatch):
    """Config warnings are logged once per process: forget the ones logged before this test."""
    from processor import config
    monkeypatch.setattr(config, "_logged", set())


@pytest.fixture
def oss(tmp_path):
    """An OSS stand-in with an empty bucket BUCKET."""
    server = OssStandin(str(tmp_path / "oss")).start()
    os.makedirs(os.path.join(server.root, BUCKET))
    yield server
    server.stop()


@pytest.fixture
def oss_model(rec_model, tmp_path, oss):
    return OssModel(rec_model, tmp_path, oss)


@pytest.fixture(scope="module")
def standalone(tmp_path_factory) -> RedisServer:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> RedisClusterOfThree:
    servers = RedisClusterOfThree(tmp_path_factory.mktemp("redis_cluster"))
    yield servers
    servers.stop()


# What `make check-fast` leaves out (`pytest -m "not slow"`): the modules that build and run other
# processes for minutes (hosts in C++, Go and Java, sanitizer and fuzzer builds, soak and Redis faults).
SLOW_MODULES = {"test_embedding", "test_fuzz", "test_grpc_host", "test_language_hosts", "test_sanitizers",
                "test_soak", "test_feature_store_faults"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__ in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
