import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.blobstore import BlobStore, LocalBlobStore, S3BlobStore, make_blob_store
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
    mtime = store.path(first).stat().st_mtime_ns
    assert store.put(DATA) == first
    assert store.path(first).stat().st_mtime_ns == mtime
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [store.path(first)]


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


def test_s3_missing_and_invalid_keys(s3_store: S3BlobStore) -> None:
    with pytest.raises(KeyError):
        s3_store.get("0" * 64 + ".png")
    assert "0" * 64 + ".png" not in s3_store
    for key in ("../etc/passwd", KEY + "\n", ""):
        with pytest.raises(ValueError):
            s3_store.get(key)
        assert key not in s3_store


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
