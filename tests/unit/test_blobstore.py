import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core import blobstore
from core.blobstore import (
    BlobStore,
    BlobStoreUnavailable,
    LocalBlobStore,
    S3BlobStore,
    _sweep_one,
    cache_control,
    make_blob_store,
)
from core.settings import Settings

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
    assert store.put(DATA) == first
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [store.path(first)]


def made_at(store: LocalBlobStore, key: str, when: float) -> None:
    os.utime(store.path(key), (when, when))


def test_a_put_of_a_blob_already_there_renews_its_time(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = store.put(DATA)
    made_at(store, key, time.time() - 86_400)
    store.put(DATA)
    assert store.path(key).stat().st_mtime > time.time() - 60
    assert store.get(key) == DATA


def test_sweep_deletes_what_was_not_made_since_and_crash_leftovers(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    old, fresh = store.put(b"old meme"), store.put(b"fresh meme")
    day_ago = time.time() - 86_400
    made_at(store, old, day_ago)
    leftover = store.path(old).with_name(".tmp-abc.part")  # a write that crashed
    leftover.write_bytes(b"half")
    os.utime(leftover, (day_ago, day_ago))
    writing = store.path(fresh).with_name(".tmp-def.part")  # a write under way
    writing.write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("not a folder of blobs")

    assert store.sweep(time.time() - 3600) == 1
    assert old not in store and fresh in store
    assert not leftover.exists() and writing.exists()
    assert store.sweep(time.time() - 3600) == 0
    assert store.put(b"old meme") == old and old in store  # made again: written again


def test_sweep_keeps_a_blob_renewed_after_it_was_listed(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = store.put(DATA)
    made_at(store, key, time.time() - 86_400)
    listed_old = store.path(key)
    store.put(DATA)  # made again between the sweep's listing and its rename
    assert _sweep_one(listed_old, time.time() - 3600) == 0
    assert store.get(key) == DATA
    assert sorted(p.name for p in listed_old.parent.iterdir()) == [key]


@pytest.mark.parametrize(
    ("hours", "max_age"), [(0, 31_536_000), (1, 3600), (168, 604_800), (24 * 3660, 31_536_000)]
)
def test_images_are_cached_no_longer_than_kept(hours: int, max_age: int) -> None:
    assert cache_control(hours) == f"public, max-age={max_age}, immutable"


def test_delete_is_idempotent(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = store.put(DATA)
    assert store.delete(key) is True
    assert key not in store
    assert store.delete(key) is False
    with pytest.raises(ValueError):
        store.delete("../" + KEY)


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


# --- the S3-compatible store, against moto's in-process server ---------------------------

try:  # moto[server] and boto3 are dev-only; without them the S3 tests are skipped
    import boto3
    from moto.server import ThreadedMotoServer
except ImportError:  # pragma: no cover - depends on the environment
    boto3 = None


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    if boto3 is None:
        pytest.skip("boto3 and moto[server] are not installed (pip install 'maas-ledger[s3]' moto)")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_store(s3_endpoint: str) -> S3BlobStore:
    # Dummy credentials for the local fake server; never a real account.
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    bucket = f"memes-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return S3BlobStore(bucket, prefix="blobs/", client=client)


def test_s3_round_trip(s3_store: S3BlobStore) -> None:
    store: BlobStore = s3_store
    key = store.put(DATA)
    assert key == KEY
    assert store.get(key) == DATA
    assert key in store
    head = s3_store._client.head_object(Bucket=s3_store.bucket, Key="blobs/" + key)
    assert head["ContentType"] == "image/png"
    assert "immutable" in head["CacheControl"]


def test_s3_put_is_idempotent(s3_store: S3BlobStore) -> None:
    assert s3_store.put(DATA, "webp") == s3_store.put(DATA, "webp")
    listing = s3_store._client.list_objects_v2(Bucket=s3_store.bucket)
    assert [o["Key"] for o in listing["Contents"]] == ["blobs/" + KEY[:-4] + ".webp"]


def test_s3_delete_is_idempotent(s3_store: S3BlobStore) -> None:
    key = s3_store.put(DATA)
    assert s3_store.delete(key) is True
    assert key not in s3_store
    assert s3_store.delete(key) is False


def test_s3_a_put_of_an_old_object_renews_it(
    s3_store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = s3_store.put(DATA)
    name = "blobs/" + key
    assert s3_store._client.head_object(Bucket=s3_store.bucket, Key=name)["CacheControl"] == (
        cache_control(0)
    )
    renewing = S3BlobStore(
        s3_store.bucket, prefix="blobs/", client=s3_store._client, retention_hours=24
    )
    assert renewing.put(DATA) == key  # not old enough: only asked for
    head = s3_store._client.head_object(Bucket=s3_store.bucket, Key=name)
    assert head["CacheControl"] == cache_control(0)
    monkeypatch.setattr(blobstore, "S3_RENEW_AFTER_S", -1.0)
    assert renewing.put(DATA) == key  # copied onto itself, with today's header
    head = s3_store._client.head_object(Bucket=s3_store.bucket, Key=name)
    assert head["CacheControl"] == cache_control(24) and head["ContentType"] == "image/png"
    assert s3_store.get(key) == DATA


def test_s3_sweep_deletes_what_was_not_made_since(s3_store: S3BlobStore) -> None:
    first, second = s3_store.put(b"one meme"), s3_store.put(b"another meme")
    s3_store._client.put_object(Bucket=s3_store.bucket, Key="blobs/notes.txt", Body=b"x")
    assert s3_store.sweep(time.time() - 3600) == 0
    assert s3_store.sweep(time.time() + 5) == 2
    assert first not in s3_store and second not in s3_store
    listing = s3_store._client.list_objects_v2(Bucket=s3_store.bucket)
    assert [o["Key"] for o in listing["Contents"]] == ["blobs/notes.txt"]


def test_s3_missing_and_invalid_keys(s3_store: S3BlobStore) -> None:
    with pytest.raises(KeyError):
        s3_store.get("0" * 64 + ".png")
    assert "0" * 64 + ".png" not in s3_store
    for key in ("../etc/passwd", KEY + "\n", ""):
        with pytest.raises(ValueError):
            s3_store.get(key)
        assert key not in s3_store


def test_s3_unreachable_is_an_os_error_for_every_call() -> None:
    """A store that does not answer is ``BlobStoreUnavailable``, an ``OSError`` as a
    local disk's failure is: never "no such image", never botocore's own types."""
    if boto3 is None:
        pytest.skip("boto3 and moto[server] are not installed (pip install 'maas-ledger[s3]' moto)")
    from botocore.config import Config

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    server.stop()  # its port now refuses connections
    client = boto3.client(
        "s3",
        endpoint_url=f"http://{host}:{port}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    store = S3BlobStore("memes", client=client)

    for call in (
        lambda: store.get(KEY),
        lambda: store.put(DATA),
        lambda: store.delete(KEY),
        lambda: KEY in store,
        lambda: store.sweep(time.time()),
    ):
        with pytest.raises(BlobStoreUnavailable) as raised:
            call()
        assert isinstance(raised.value, OSError)


def test_make_blob_store(tmp_path: Path) -> None:
    assert isinstance(make_blob_store(Settings(data_dir=tmp_path)), LocalBlobStore)

    @dataclass
    class S3Settings:
        data_dir: Path = tmp_path
        blob_store: str = "s3"
        s3_bucket: str = ""

    with pytest.raises(ValueError, match="s3_bucket"):
        make_blob_store(S3Settings())
    with pytest.raises(ValueError, match="unknown blob_store"):
        make_blob_store(S3Settings(blob_store="ftp"))
