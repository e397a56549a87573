"""Content-addressed blob storage for rendered memes.

Keys are "<sha256 hex>.<ext>", so writing the same bytes twice is a no-op and a worker
that crashes and re-renders a request cannot produce a conflicting blob.

Two stores behind one ``BlobStore`` protocol, chosen by ``make_blob_store(settings)``:

- ``LocalBlobStore`` (default): files under ``<data_dir>/blobs``;
- ``S3BlobStore``: any S3-compatible object store (bucket, optional key prefix and
  endpoint URL for non-AWS servers), through boto3, which is the optional extra
  ``maas-ledger[s3]`` and imported only when this store is built.

``get`` raises ``KeyError`` for a missing blob and ``ValueError`` for a malformed key,
in both stores. ``delete`` (personal-data erasure) is idempotent: deleting a missing
blob is not an error.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Protocol

EXTENSIONS = frozenset({"png", "webp", "jpg"})
_KEY_RE = re.compile(r"[0-9a-f]{64}\.(?:png|webp|jpg)")


MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "jpg": "image/jpeg"}


class BlobStore(Protocol):
    def put(self, data: bytes, ext: str = "png") -> str: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> bool:
        """Remove the blob; True if it was there."""
        ...

    def __contains__(self, key: object) -> bool: ...


def blob_key(data: bytes, ext: str = "png") -> str:
    if ext not in EXTENSIONS:
        raise ValueError(f"unsupported blob extension: {ext!r}")
    return f"{hashlib.sha256(data).hexdigest()}.{ext}"


def validate_key(key: str) -> str:
    """Return key unchanged or raise ValueError.

    The strict whitelist is what stops path traversal ("../x", absolute paths, NUL
    bytes): fullmatch, because `$` in re.match would also accept a trailing newline.
    """
    if not isinstance(key, str) or _KEY_RE.fullmatch(key) is None:
        raise ValueError(f"invalid blob key: {key!r}")
    return key


class LocalBlobStore:
    """Blobs on the local filesystem under `root/<first 2 hex chars>/<key>`.

    The two-character fan-out keeps directories small once there are millions of memes.
    """

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync

    def path(self, key: str) -> Path:
        validate_key(key)
        return self.root / key[:2] / key

    def put(self, data: bytes, ext: str = "png") -> str:
        key = blob_key(data, ext)
        target = self.path(key)
        if target.exists():
            return key
        target.parent.mkdir(exist_ok=True)
        self._write_atomically(target, data)
        return key

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def delete(self, key: str) -> bool:
        path = self.path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def __contains__(self, key: object) -> bool:
        return (
            isinstance(key, str) and _KEY_RE.fullmatch(key) is not None and self.path(key).exists()
        )

    def _write_atomically(self, target: Path, data: bytes) -> None:
        # Temp file in the same directory so os.replace is a same-filesystem rename:
        # readers see either no blob or the whole blob, never a partial one.
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                if self._fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise


class S3BlobStore:
    """Blobs as objects ``<prefix><key>`` in one bucket of an S3-compatible store.

    ``put`` asks first (HEAD) and uploads only a missing object: content addressing
    makes an existing object the right one. Objects carry their media type and an
    immutable cache header, so a CDN or the store's own HTTP endpoint can serve them.
    Credentials come from boto3's usual chain unless given.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: Any = None,
        **credentials: str,
    ) -> None:
        if client is None:
            try:
                import boto3
            except ImportError as exc:  # the optional extra is not installed
                raise RuntimeError(
                    "S3BlobStore needs boto3: pip install 'maas-ledger[s3]'"
                ) from exc
            client = boto3.client(
                "s3", endpoint_url=endpoint_url, region_name=region_name, **credentials
            )
        self.bucket = bucket
        self.prefix = prefix
        self._client = client

    def object_name(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def put(self, data: bytes, ext: str = "png") -> str:
        key = blob_key(data, ext)
        if key in self:
            return key
        self._client.put_object(
            Bucket=self.bucket,
            Key=self.object_name(key),
            Body=data,
            ContentType=MEDIA_TYPES[ext],
            CacheControl="public, max-age=31536000, immutable",
        )
        return key

    def get(self, key: str) -> bytes:
        name = self.object_name(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=name)
        except self._client.exceptions.NoSuchKey:
            raise KeyError(key) from None
        return response["Body"].read()

    def delete(self, key: str) -> bool:
        existed = key in self
        self._client.delete_object(Bucket=self.bucket, Key=self.object_name(key))
        return existed

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str) or _KEY_RE.fullmatch(key) is None:
            return False
        try:
            self._client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except Exception as exc:  # botocore's ClientError; boto3 may not be importable here
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def make_blob_store(settings: Any) -> BlobStore:
    """The store named by settings: ``blob_store`` is "local" (default) or "s3"."""
    kind = settings.blob_store
    if kind == "local":
        return LocalBlobStore(Path(settings.data_dir) / "blobs")
    if kind == "s3":
        bucket = settings.s3_bucket
        if not bucket:
            raise ValueError("blob_store 's3' needs s3_bucket")
        return S3BlobStore(
            bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region or None,
        )
    raise ValueError(f"unknown blob_store: {kind!r} (expected 'local' or 's3')")
