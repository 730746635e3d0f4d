"""Model stores by `model_store_type`, as fsspec's registry.py keeps filesystems by protocol: each
remote store's transport is imported only when a config names it (the SDKs are heavy and optional),
and a missing SDK says which extra to install."""
from __future__ import annotations

import importlib
from typing import Dict, NamedTuple, Tuple


class _Transport(NamedTuple):
    module: str  # imported on first use
    name: str    # a class with from_config(config) -> StoreTransport
    extra: str   # pip install 'processor[<extra>]' brings its packages


REMOTE_STORES: Dict[str, _Transport] = {
    "oss": _Transport("processor.stores.oss", "OssTransport", "oss"),
    "hdfs": _Transport("processor.stores.hdfs", "WebHdfsTransport", "hdfs"),
}
STORE_TYPES: Tuple[str, ...] = ("local", *REMOTE_STORES)  # what config.model_store_type accepts


def open_model_store(config):
    """The store `config.model_store_type` names, over the config's directories (a ProcessorConfig)."""
    from .local import LocalModelStore
    if config.model_store_type == "local":
        return LocalModelStore()
    from ..errors import ConfigError
    from .remote import RemoteModelStore
    entry = REMOTE_STORES[config.model_store_type]
    try:
        transport_class = getattr(importlib.import_module(entry.module), entry.name)
        transport = transport_class.from_config(config)
    except ImportError as e:
        raise ConfigError("model_store_type", f"'{config.model_store_type}' needs the {e.name} package: "
                          f"pip install 'processor[{entry.extra}]'") from None
    return RemoteModelStore(transport, [config.savedmodel_dir, config.checkpoint_dir], retries=config.download_retries)
