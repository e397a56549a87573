"""Content-addressed blob storage for rendered memes.

Keys are "<sha256 hex>.<ext>", so writing the same bytes twice is a no-op and a worker
that crashes and re-renders a request cannot produce a conflicting blob.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

EXTENSIONS = frozenset({"png", "webp", "jpg"})
_KEY_RE = re.compile(r"[0-9a-f]{64}\.(?:png|webp|jpg)")


class BlobStore(Protocol):
    def put(self, data: bytes, ext: str = "png") -> str: ...

    def get(self, key: str) -> bytes: ...


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
