"""Where model files live: the local filesystem, or a remote store (OSS, HDFS) listed once a poll and
downloaded into a checked local cache. registry.py opens the one a config names."""
from .base import FileInfo, ModelStore
from .local import LocalModelStore
from .registry import STORE_TYPES, open_model_store

__all__ = ["FileInfo", "ModelStore", "LocalModelStore", "STORE_TYPES", "open_model_store"]
