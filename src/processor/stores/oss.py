"""Alibaba Cloud OSS as a model store, through the `oss2` SDK.

Paths are `oss://bucket/key`. Listing is ListObjects over the whole prefix (no delimiter), 1,000 keys a
call: a checkpoint directory of a few hundred files costs one call a poll. Credentials come from the
config (`oss_access_id`, `oss_access_key`) or from oss2's environment variables (`OSS_ACCESS_KEY_ID`,
`OSS_ACCESS_KEY_SECRET`, and `OSS_SESSION_TOKEN` for STS); they never reach logs or errors: the SDK logs
signed request headers at DEBUG, so its loggers get a filter that masks them.
"""
from __future__ import annotations

import logging
import os
from typing import BinaryIO, Callable, Dict, List, Tuple, TypeVar

import oss2
import requests

from ..config import OSS_ENVIRONMENT
from ..errors import ConfigError, StoreError
from .base import FileInfo

LIST_PAGE = 1000  # OSS's maximum keys per ListObjects call
CHUNK_BYTES = 256 << 10
CONNECT_TIMEOUT_SECONDS = 10
CREDENTIAL_HINT = " (check oss_access_id and oss_access_key, or OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET)"
DENIED_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "SecurityTokenExpired")

T = TypeVar("T")


def split_oss_url(url: str) -> Tuple[str, str]:
    """'oss://bucket/a/b' -> ('bucket', 'a/b')."""
    if not url.startswith("oss://"):
        raise ValueError(f"{url!r} is not an oss:// URL")
    bucket, _, key = url[len("oss://"):].partition("/")
    return bucket, key.rstrip("/")


class _MaskSecrets(logging.Filter):
    """Rewrites a log record so that none of `secrets` appears in it."""

    def __init__(self, secrets: List[str]):
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(s in message for s in self._secrets):
            for secret in self._secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, ()
        return True


def _mask_sdk_logs(secrets: List[str]) -> None:
    mask = _MaskSecrets(secrets)
    for name in [n for n in logging.Logger.manager.loggerDict if n == "oss2" or n.startswith("oss2.")]:
        logging.getLogger(name).addFilter(mask)


class OssTransport:
    """The StoreTransport of OSS."""

    @classmethod
    def from_config(cls, config) -> "OssTransport":
        return cls(config.oss_endpoint, config.oss_access_id, config.oss_access_key)

    def __init__(self, endpoint: str, access_id: str = "", access_key: str = ""):
        given = {"oss_endpoint": endpoint, "oss_access_id": access_id, "oss_access_key": access_key}
        for field, variable in OSS_ENVIRONMENT.items():
            given[field] = given[field] or os.environ.get(variable, "")
            if not given[field]:
                raise ConfigError(field, f"is required when model_store_type is 'oss' (or set {variable})")
        endpoint, access_id, access_key = given["oss_endpoint"], given["oss_access_id"], given["oss_access_key"]
        token = os.environ.get("OSS_SESSION_TOKEN", "")
        self._auth = oss2.StsAuth(access_id, access_key, token) if token else oss2.Auth(access_id, access_key)
        _mask_sdk_logs([access_id, access_key, token])
        self._endpoint = endpoint
        self._buckets: Dict[str, oss2.Bucket] = {}

    def list_files(self, root: str) -> List[FileInfo]:
        bucket, key = self._locate(root)
        prefix = key + "/" if key else ""
        files, marker = [], ""
        while True:
            page = self._call(f"list {root}/", lambda: bucket.list_objects(prefix=prefix, marker=marker,
                                                                            max_keys=LIST_PAGE))
            files += [FileInfo(f"oss://{bucket.bucket_name}/{o.key}", o.size, o.etag)
                      for o in page.object_list if not o.key.endswith("/")]
            if not page.is_truncated:
                return files
            marker = page.next_marker

    def read_bytes(self, path: str) -> bytes:
        bucket, key = self._locate(path)
        return self._call(f"read {path}", lambda: bucket.get_object(key).read())

    def read_into(self, path: str, out: BinaryIO, offset: int) -> None:
        bucket, key = self._locate(path)
        what = f"download {path}" + (f" from byte {offset}" if offset else "")
        # A whole-object GET is checked by oss2 against the server's CRC-64; a resumed range is checked
        # by its size, against the listing.
        result = self._call(what, lambda: bucket.get_object(key, byte_range=(offset, None) if offset else None))
        while True:
            chunk = self._call(what, lambda: result.read(CHUNK_BYTES))
            if not chunk:
                break
            out.write(chunk)  # local errors (a full disk) are the cache's to report, not retried here
        if not offset:
            self._call(what, lambda: oss2.utils.check_crc("get", result.client_crc, result.server_crc,
                                                          result.request_id))

    def write_bytes(self, path: str, data: bytes) -> None:
        """Uploads `data` as the object at `path` (oss2 checks the server's CRC-64 of it)."""
        bucket, key = self._locate(path)
        self._call(f"upload {path}", lambda: bucket.put_object(key, data))

    def _locate(self, url: str) -> Tuple[oss2.Bucket, str]:
        name, key = split_oss_url(url)
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = oss2.Bucket(self._auth, self._endpoint, name,
                                                       connect_timeout=CONNECT_TIMEOUT_SECONDS)
        return bucket, key

    @staticmethod
    def _call(what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except oss2.exceptions.InconsistentError:
            raise StoreError(f"OSS {what}: the data does not match the server's CRC-64", transient=True) from None
        except oss2.exceptions.RequestError as e:
            raise StoreError(f"OSS {what}: network error: {type(e.exception).__name__}", transient=True) from None
        except oss2.exceptions.OssError as e:
            # Only status, code and message: the error's details echo the access key id.
            hint = CREDENTIAL_HINT if e.code in DENIED_CODES else ""
            raise StoreError(f"OSS {what}: {e.status} {e.code}: {e.message}{hint}",
                             transient=e.status >= 500 or e.status == 429) from None
        except (requests.RequestException, ConnectionError) as e:  # raised while a body streams
            raise StoreError(f"OSS {what}: network error: {type(e).__name__}", transient=True) from None
