"""A protocol-level OSS stand-in for the oss2 SDK (see standin_server.py for why): buckets are
directories under `root`, objects their files. Speaks path-style OSS on 127.0.0.1: ListObjects (prefix,
marker, max-keys, delimiter, url encoding, pagination), GetObject with ranges, HeadObject, PutObject
(answering the CRC-64 oss2 checks), and OSS's XML errors. Every request must carry a valid V1 signature (HMAC-SHA1 of the canonical request) by a known
key pair, as OSS checks it; error bodies echo the access key id, as OSS's do.
"""
from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import os
import re
import shutil
import tempfile
import time
from typing import List, Optional, Tuple
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from oss2.utils import Crc64

from standin_server import StandinHandler, StandinServer

ACCESS_ID = "standin-access-id"
ACCESS_KEY = "standin-access-key"
MAX_KEYS = 1000
DENIED_MESSAGES = {
    "AccessDenied": "AccessDenied: the request carries no OSS signature.",
    "InvalidAccessKeyId": "The OSS Access Key Id you provided does not exist in our records.",
    "SignatureDoesNotMatch": "The request signature we calculated does not match the signature you provided.",
}
SUBRESOURCES = {"acl", "uploads", "location", "cors", "logging", "website", "referer", "lifecycle", "delete",
                "append", "tagging", "objectMeta", "uploadId", "partNumber", "security-token", "position",
                "symlink", "restore", "versionId", "versions", "versioning"}


def _etag(path: str) -> str:
    """OSS's ETag of a simple upload: the content's MD5, so re-uploading the same bytes keeps it."""
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest().upper()


class OssHandler(StandinHandler):
    def do_GET(self) -> None:
        self._serve(head_only=False)

    def do_HEAD(self) -> None:
        self._serve(head_only=True)

    def do_PUT(self) -> None:
        url = urlsplit(self.path)
        bucket, _, quoted_key = url.path.lstrip("/").partition("/")
        key = unquote(quoted_key)
        data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        denied = self._check_signature(bucket, key, dict(parse_qsl(url.query, keep_blank_values=True)))
        if denied:
            return self._error(403, denied, DENIED_MESSAGES[denied], False)
        fault = self.take_fault("put", f"{bucket}/{key}")
        if fault is not None and fault.action == "500":
            return self._error(500, "InternalError", "injected server error", False)
        if not os.path.isdir(os.path.join(self.server.root, bucket)):
            return self._error(404, "NoSuchBucket", "The specified bucket does not exist.", False)
        if not key or key.endswith("/"):
            return self._error(400, "InvalidObjectName", "The object name is not valid.", False)
        self.server.record("put", f"{bucket}/{key}")
        self.server.put(bucket, key, data)
        crc = Crc64(0)
        crc.update(data)
        self.send_body(200, [("ETag", f'"{hashlib.md5(data).hexdigest().upper()}"'), ("x-oss-request-id", "standin"),
                             ("x-oss-hash-crc64ecma", str(crc.crc))], b"")

    def _serve(self, head_only: bool) -> None:
        url = urlsplit(self.path)
        bucket, _, quoted_key = url.path.lstrip("/").partition("/")
        key = unquote(quoted_key)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        operation = "list" if not key else "head" if head_only else "get-range" if "Range" in self.headers else "get"
        denied = self._check_signature(bucket, key, params)
        if denied:
            return self._error(403, denied, DENIED_MESSAGES[denied], head_only)
        fault = self.take_fault(operation, f"{bucket}/{key}")
        if fault is not None and fault.action == "500":
            return self._error(500, "InternalError", "injected server error", head_only)
        self.server.record(operation, f"{bucket}/{key}")
        if not os.path.isdir(os.path.join(self.server.root, bucket)):
            return self._error(404, "NoSuchBucket", "The specified bucket does not exist.", head_only)
        if not key:
            return self._list(bucket, params, fault)
        path = os.path.join(self.server.root, bucket, key)
        if not os.path.isfile(path):
            return self._error(404, "NoSuchKey", "The specified key does not exist.", head_only)
        with open(path, "rb") as f:
            data = f.read()
        headers = [("ETag", f'"{_etag(path)}"'),
                   ("Last-Modified", email.utils.formatdate(os.path.getmtime(path), usegmt=True)),
                   ("Content-Type", "application/octet-stream"), ("x-oss-request-id", "standin"),
                   ("Accept-Ranges", "bytes")]
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else len(data) - 1, len(data) - 1)
            if start >= len(data):
                return self._error(416, "InvalidRange", "The requested range is not satisfiable", head_only)
            headers.append(("Content-Range", f"bytes {start}-{end}/{len(data)}"))
            return self.send_body(206, headers, data[start:end + 1], fault, head_only)
        crc = Crc64(0)
        crc.update(data)
        headers.append(("x-oss-hash-crc64ecma", str(crc.crc)))
        self.send_body(200, headers, data, fault, head_only)

    def _list(self, bucket: str, params: dict, fault) -> None:
        prefix, marker, delimiter = params.get("prefix", ""), params.get("marker", ""), params.get("delimiter", "")
        max_keys = min(int(params.get("max-keys", "100")), MAX_KEYS)
        encode = params.get("encoding-type") == "url"
        keys = [k for k in self.server.keys(bucket) if k.startswith(prefix) and k > marker]
        contents: List[str] = []
        prefixes: List[str] = []
        last = ""
        for key in keys:
            if len(contents) + len(prefixes) == max_keys:
                break
            rest = key[len(prefix):]
            if delimiter and delimiter in rest:
                common = prefix + rest.split(delimiter, 1)[0] + delimiter
                if common not in prefixes:
                    prefixes.append(common)
                last = key
                continue
            contents.append(key)
            last = key
        truncated = bool(keys) and last != keys[-1]
        name = (lambda k: quote(k, safe="/")) if encode else escape
        body = ["<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult>",
                f"<Name>{bucket}</Name><Prefix>{name(prefix)}</Prefix><Marker>{name(marker)}</Marker>",
                f"<MaxKeys>{max_keys}</MaxKeys><Delimiter>{name(delimiter)}</Delimiter>",
                "<EncodingType>url</EncodingType>" if encode else "",
                f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
                f"<NextMarker>{name(last)}</NextMarker>" if truncated else ""]
        for key in contents:
            path = os.path.join(self.server.root, bucket, key)
            stat = os.stat(path)
            iso = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(stat.st_mtime))
            body.append(f"<Contents><Key>{name(key)}</Key><LastModified>{iso}</LastModified>"
                        f"<ETag>\"{_etag(path)}\"</ETag><Type>Normal</Type>"
                        f"<Size>{stat.st_size}</Size><StorageClass>Standard</StorageClass></Contents>")
        body += [f"<CommonPrefixes><Prefix>{name(p)}</Prefix></CommonPrefixes>" for p in prefixes]
        body.append("</ListBucketResult>")
        self.send_body(200, [("Content-Type", "application/xml"), ("x-oss-request-id", "standin")],
                       "".join(body).encode(), fault)

    def _check_signature(self, bucket: str, key: str, params: dict) -> Optional[str]:
        """The error code OSS gives for the request's signature, or None when it is valid."""
        match = re.fullmatch(r"OSS ([^:]+):(.+)", self.headers.get("Authorization", ""))
        if not match:
            return "AccessDenied"
        access_id, signature = match.groups()
        if access_id != self.server.access_id:
            return "InvalidAccessKeyId"
        oss_headers = sorted((k.lower(), v) for k, v in self.headers.items() if k.lower().startswith("x-oss-"))
        sub = sorted((k, v) for k, v in params.items() if k in SUBRESOURCES)
        resource = f"/{bucket}/{key}" + ("?" + "&".join(f"{k}={v}" if v else k for k, v in sub) if sub else "")
        to_sign = "\n".join([self.command, self.headers.get("Content-MD5", ""), self.headers.get("Content-Type", ""),
                             self.headers.get("Date", ""), "".join(f"{k}:{v}\n" for k, v in oss_headers) + resource])
        expected = base64.b64encode(hmac.new(self.server.access_key.encode(), to_sign.encode(), hashlib.sha1).digest())
        return None if hmac.compare_digest(expected.decode(), signature) else "SignatureDoesNotMatch"

    def _error(self, status: int, code: str, message: str, head_only: bool) -> None:
        self.server.record("error", code)
        access_id = re.match(r"OSS ([^:]+):", self.headers.get("Authorization", "") + "OSS -:")
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>"
                f"<RequestId>standin</RequestId><HostId>{self.server.address}</HostId>"
                f"<OSSAccessKeyId>{escape(access_id.group(1))}</OSSAccessKeyId></Error>").encode()
        self.send_body(status, [("Content-Type", "application/xml"), ("x-oss-request-id", "standin")], body,
                       head_only=head_only)


class OssStandin(StandinServer):
    def __init__(self, root: str, access_id: str = ACCESS_ID, access_key: str = ACCESS_KEY):
        super().__init__(OssHandler, root)
        self.access_id, self.access_key = access_id, access_key

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}"

    def keys(self, bucket: str) -> List[str]:
        base = os.path.join(self.root, bucket)
        found = []
        for parent, _, names in os.walk(base):
            found += [os.path.relpath(os.path.join(parent, n), base) for n in names]
        return sorted(found)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        """Uploads an object: it appears whole, at once, as OSS objects do."""
        path = os.path.join(self.root, bucket, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.root, delete=False) as f:  # outside every bucket
            f.write(data)
        os.replace(f.name, path)

    def upload_tree(self, local_dir: str, bucket: str, key_prefix: str, only: Optional[Tuple[str, ...]] = None) -> None:
        """Uploads a local directory's files (those whose name contains one of `only`, if given)."""
        for parent, _, names in os.walk(local_dir):
            for name in sorted(names):
                if only is None or any(part in name for part in only):
                    source = os.path.join(parent, name)
                    relative = os.path.relpath(source, local_dir)
                    with open(source, "rb") as f:
                        self.put(bucket, f"{key_prefix}/{relative}", f.read())

    def remove(self, bucket: str, key_prefix: str) -> None:
        target = os.path.join(self.root, bucket, key_prefix)
        shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)


BUCKET = "models"
CHECKPOINT_FILES = (".index", ".data-", "checkpoint")


class OssModel:
    """A private copy of the test model, uploaded to the stand-in; new versions are trained locally and
    uploaded the way a sync job would (files in any order, each object appearing whole)."""

    def __init__(self, rec_model, tmp_path, server: OssStandin):
        self.local = rec_model.copy(tmp_path / "local")
        self.server = server
        self.cache_dir = str(tmp_path / "cache")
        server.upload_tree(self.local.savedmodel_dir, BUCKET, "rec/saved_model")
        self.upload_checkpoints()

    def upload_checkpoints(self, only=CHECKPOINT_FILES) -> None:
        self.server.upload_tree(self.local.checkpoint_dir, BUCKET, "rec/checkpoints", only)

    def config(self, **overrides) -> dict:
        return {"model_store_type": "oss", "savedmodel_dir": f"oss://{BUCKET}/rec/saved_model",
                "checkpoint_dir": f"oss://{BUCKET}/rec/checkpoints", "oss_endpoint": self.server.endpoint,
                "oss_access_id": ACCESS_ID, "oss_access_key": ACCESS_KEY, "local_cache_dir": self.cache_dir,
                "poll_interval_seconds": 0, **overrides}

    def train(self, seed: int) -> str:
        """A newer version on the local side; returns its step's remote prefix."""
        self.local.trainer.train(3, seed=seed)
        prefix = self.local.trainer.save_checkpoint(self.local.checkpoint_dir)
        return self.remote(prefix)

    @staticmethod
    def remote(local_prefix: str) -> str:
        return f"oss://{BUCKET}/rec/checkpoints/{os.path.basename(local_prefix)}"

    def local_prefix(self, remote_prefix: str) -> str:
        return os.path.join(self.local.checkpoint_dir, os.path.basename(remote_prefix))

    def cached_versions(self) -> list:
        (entry,) = [e for e in os.listdir(self.cache_dir)]
        root = os.path.join(self.cache_dir, entry)
        return sorted(n.rsplit("-", 1)[0] for n in os.listdir(root) if not n.startswith("."))
