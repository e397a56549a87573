"""Content-addressed blob storage for rendered memes.

Keys are "<sha256 hex>.<ext>", so writing the same bytes twice is a no-op and a worker
that crashes and re-renders a request cannot produce a conflicting blob.

Two stores behind one ``BlobStore`` protocol, chosen by ``make_blob_store(settings)``:

- ``LocalBlobStore`` (default): files under ``<data_dir>/blobs``;
- ``S3BlobStore``: any S3-compatible object store (bucket, optional key prefix and
  endpoint URL for non-AWS servers), through boto3, which is the optional extra
  ``maas-ledger[s3]`` and imported only when this store is built.

``get`` raises ``KeyError`` for a missing blob and ``ValueError`` for a malformed key,
in both stores; a store that cannot be reached raises ``OSError`` (the local disk's own,
or ``BlobStoreUnavailable`` for S3's connection errors and refusals), which a caller may
try again later. ``delete`` (personal-data erasure) is idempotent: deleting a missing
blob is not an error.

Images are kept for a retention after they were last made (``image_retention_hours``;
``docs/data-retention.md``): ``put`` of a blob that is already there renews its time
(a popular standard meme is made again and again under one key), and ``sweep`` deletes
the blobs not made since a cutoff (``maas blobs sweep``, run by ``maas up``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

EXTENSIONS = frozenset({"png", "webp", "jpg"})
_KEY_RE = re.compile(r"[0-9a-f]{64}\.(?:png|webp|jpg)")


MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "jpg": "image/jpeg"}

# How often the S3 store renews an object that is made again: a copy onto itself is a
# request, so not at every put of a popular meme. An image there is kept at least its
# retention minus this after it was last made.
S3_RENEW_AFTER_S = 3600.0
_A_YEAR_S = 31_536_000


def cache_control(retention_hours: int) -> str:
    """What an image may be cached for: a key's bytes never change, but the image goes
    when its retention ends (0: kept until erased)."""
    max_age_s = _A_YEAR_S if retention_hours == 0 else min(retention_hours * 3600, _A_YEAR_S)
    return f"public, max-age={max_age_s}, immutable"


_NEEDS_BOTO3 = "S3BlobStore needs boto3: pip install 'maas-ledger[s3]'"


class BlobStoreUnavailable(OSError):
    """The S3 store could not be reached, or refused a call other than with "no such
    object": an ``OSError``, as a local disk's failure is, so callers handle both alike."""


class BlobStore(Protocol):
    def put(self, data: bytes, ext: str = "png") -> str: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> bool:
        """Remove the blob; True if it was there."""
        ...

    def sweep(self, made_before: float) -> int:
        """Delete every blob last made before ``made_before`` (seconds since the epoch);
        how many went."""
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
    A blob's modification time is when it was last made: ``put`` renews it.
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
        try:
            os.utime(target)  # already there: made again now
            return key
        except FileNotFoundError:
            pass
        target.parent.mkdir(exist_ok=True)
        self._write_atomically(target, data)
        return key

    def sweep(self, made_before: float) -> int:
        """Each old blob is first renamed aside and its time read again: a ``put`` that
        renewed it meanwhile wins (it is renamed back), and one that found it gone
        wrote it again. Leftovers of a crashed write or sweep go too."""
        swept = 0
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            with os.scandir(folder) as entries:
                old = [e.name for e in entries if _stat_mtime(e.path) < made_before]
            for name in old:
                path = folder / name
                if _KEY_RE.fullmatch(name):
                    swept += _sweep_one(path, made_before)
                elif name.startswith((_TMP_PREFIX, _SWEEP_PREFIX)):
                    path.unlink(missing_ok=True)
        return swept

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
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=_TMP_PREFIX, suffix=".part")
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


_TMP_PREFIX = ".tmp-"
_SWEEP_PREFIX = ".sweep-"


def _stat_mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:  # swept or replaced since it was listed
        return time.time()


def _sweep_one(path: Path, made_before: float) -> int:
    aside = path.with_name(_SWEEP_PREFIX + path.name)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return 0
    try:
        if aside.stat().st_mtime >= made_before:
            os.replace(aside, path)  # renewed between the listing and the rename
            return 0
        aside.unlink()
    except FileNotFoundError:  # another sweeper (a restart's overlap) took it as left over
        return 0
    return 1


class S3BlobStore:
    """Blobs as objects ``<prefix><key>`` in one bucket of an S3-compatible store.

    ``put`` asks first (HEAD) and uploads only a missing object: content addressing
    makes an existing object the right one; an existing object older than
    ``S3_RENEW_AFTER_S`` is copied onto itself, which renews its time. Objects carry
    their media type and a cache header, so a CDN or the store's own HTTP endpoint can
    serve them. ``sweep`` lists the prefix: fine for the buckets one machine fills; at
    10,000 requests/s a bucket lifecycle rule on the prefix does it instead
    (``docs/capacity.md``). Credentials come from boto3's usual chain unless given.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: Any = None,
        retention_hours: int = 0,
        **credentials: str,
    ) -> None:
        try:
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as exc:  # the optional extra is not installed
            raise RuntimeError(_NEEDS_BOTO3) from exc
        self._failures: tuple[type[Exception], ...] = (BotoCoreError, ClientError)
        if client is None:
            try:
                import boto3
            except ImportError as exc:
                raise RuntimeError(_NEEDS_BOTO3) from exc
            client = boto3.client(
                "s3", endpoint_url=endpoint_url, region_name=region_name, **credentials
            )
        self.bucket = bucket
        self.prefix = prefix
        self._client = client
        self._cache_control = cache_control(retention_hours)

    def object_name(self, key: str) -> str:
        return self.prefix + validate_key(key)

    @contextlib.contextmanager
    def _reaching(self, what: str) -> Iterator[None]:
        """botocore's failures of the calls inside, as ``BlobStoreUnavailable``."""
        try:
            yield
        except self._failures as exc:
            raise BlobStoreUnavailable(f"S3 {what} failed: {exc}") from exc

    def put(self, data: bytes, ext: str = "png") -> str:
        key = blob_key(data, ext)
        made = self._last_made(key)
        with self._reaching("put"):
            if made is None:
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=self.object_name(key),
                    Body=data,
                    ContentType=MEDIA_TYPES[ext],
                    CacheControl=self._cache_control,
                )
            elif made < time.time() - S3_RENEW_AFTER_S:
                name = self.object_name(key)
                self._client.copy_object(
                    Bucket=self.bucket,
                    Key=name,
                    CopySource={"Bucket": self.bucket, "Key": name},
                    MetadataDirective="REPLACE",  # a copy onto itself must change something
                    ContentType=MEDIA_TYPES[ext],
                    CacheControl=self._cache_control,
                )
        return key

    def sweep(self, made_before: float) -> int:
        """Each old object is asked for again (HEAD) just before its delete, so a
        ``put`` that renewed it since the listing keeps it."""
        swept = 0
        with self._reaching("sweep"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    listed_old = item["LastModified"].timestamp() < made_before
                    if _KEY_RE.fullmatch(key) is None or not listed_old:
                        continue
                    made = self._last_made(key)
                    if made is not None and made < made_before:
                        self._client.delete_object(Bucket=self.bucket, Key=item["Key"])
                        swept += 1
        return swept

    def _last_made(self, key: str) -> float | None:
        """When the object was last written, or None if there is none."""
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self.object_name(key))
        except self._failures as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise BlobStoreUnavailable(f"S3 head failed: {exc}") from exc
        return head["LastModified"].timestamp()

    def get(self, key: str) -> bytes:
        name = self.object_name(key)
        with self._reaching("get"):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=name)
            except self._client.exceptions.NoSuchKey:
                raise KeyError(key) from None
            return response["Body"].read()

    def delete(self, key: str) -> bool:
        existed = key in self
        with self._reaching("delete"):
            self._client.delete_object(Bucket=self.bucket, Key=self.object_name(key))
        return existed

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str) or _KEY_RE.fullmatch(key) is None:
            return False
        return self._last_made(key) is not None


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
            retention_hours=settings.image_retention_hours,
        )
    raise ValueError(f"unknown blob_store: {kind!r} (expected 'local' or 's3')")
