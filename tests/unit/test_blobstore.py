import hashlib
from pathlib import Path

import pytest

from processors.generators.blobstore import BlobStore, LocalBlobStore

DATA = b"\x89PNG fake meme bytes"
KEY = hashlib.sha256(DATA).hexdigest() + ".png"


def test_round_trip(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    key = store.put(DATA)
    assert key == KEY
    assert store.get(key) == DATA
    assert store.path(key).read_bytes() == DATA
    assert key in store


def test_satisfies_protocol(tmp_path: Path) -> None:
    store: BlobStore = LocalBlobStore(tmp_path)
    assert store.get(store.put(DATA, "webp")) == DATA


def test_put_is_idempotent_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    first = store.put(DATA)
    mtime = store.path(first).stat().st_mtime_ns
    assert store.put(DATA) == first
    assert store.path(first).stat().st_mtime_ns == mtime
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [store.path(first)]


def test_missing_key_raises_key_error(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(KeyError):
        store.get("0" * 64 + ".png")
    assert "0" * 64 + ".png" not in store


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "../" + KEY,
        "/" + KEY,
        KEY + "\n",
        KEY.upper(),
        KEY[:-4] + ".gif",
        KEY[:-4],
        "ab/" + KEY,
        KEY.replace(".png", "/../x.png"),
        "",
    ],
)
def test_invalid_keys_rejected(tmp_path: Path, key: str) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(ValueError):
        store.get(key)
    with pytest.raises(ValueError):
        store.path(key)
    assert key not in store


def test_unsupported_extension_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalBlobStore(tmp_path).put(DATA, "../png")
