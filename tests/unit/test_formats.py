"""PNG by default, WebP or JPEG by the Accept header; deterministic conversion."""

import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from memes.formats import (
    JPEG,
    PNG,
    WEBP,
    ConvertedCache,
    convert,
    etag_for,
    negotiate,
)
from memes.render import render_meme

REPO = Path(__file__).resolve().parents[2]
KEY = "a" * 64 + ".png"


@pytest.fixture(scope="module")
def png() -> bytes:
    return render_meme("req-f", "stonks", 48.85, 2.35, "standard").png


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, PNG),
        ("", PNG),
        ("*/*", PNG),
        ("image/*", PNG),
        ("image/png", PNG),
        ("image/webp", WEBP),
        ("IMAGE/WEBP", WEBP),
        ("image/jpeg", JPEG),
        ("image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8", WEBP),
        ("image/png, image/webp", PNG),  # equal: the stored original wins
        ("image/webp;q=0.5, image/png", PNG),
        ("image/webp, image/png;q=0.4", WEBP),
        ("image/jpeg;q=0.9, image/webp;q=0.8", JPEG),
        ("image/webp;q=0", PNG),
        ("image/gif", PNG),  # nothing acceptable: PNG rather than a 406
        ("text/html, */*;q=0.1", PNG),
        ("image/webp;q=abc", PNG),
        ("garbage", PNG),
    ],
)
def test_negotiate(accept: str | None, expected: str) -> None:
    assert negotiate(accept) == expected


@pytest.mark.parametrize(("media_type", "fmt"), [(WEBP, "WEBP"), (JPEG, "JPEG")])
def test_convert(png: bytes, media_type: str, fmt: str) -> None:
    data = convert(png, media_type)  # type: ignore[arg-type]
    image = Image.open(io.BytesIO(data))
    assert image.format == fmt
    assert image.size == (512, 512)
    assert len(data) < len(png) * 2
    assert b"Exif" not in data[:200]


def test_png_is_passed_through(png: bytes) -> None:
    assert convert(png, PNG) is png


def test_conversion_is_deterministic_across_processes(png: bytes) -> None:
    script = (
        "import hashlib, sys\n"
        "from memes.formats import convert\n"
        "from memes.render import render_meme\n"
        "png = render_meme('req-f', 'stonks', 48.85, 2.35, 'standard').png\n"
        "for t in ('image/webp', 'image/jpeg'):\n"
        "    print(hashlib.sha256(convert(png, t)).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "7"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [hashlib.sha256(convert(png, t)).hexdigest() for t in (WEBP, JPEG)]


def test_etag_per_representation() -> None:
    assert etag_for(KEY, PNG) == KEY
    assert etag_for(KEY, WEBP) == KEY + ".webp"
    assert etag_for(KEY, JPEG) == KEY + ".jpg"


def counting_loader(png: bytes) -> tuple[list[str], Callable[[str], bytes]]:
    """A store's ``get`` that serves ``png`` for any key and keeps the keys asked for."""
    loads: list[str] = []

    def load(key: str) -> bytes:
        loads.append(key)
        return png

    return loads, load


def test_converted_cache_converts_once_and_stays_bounded(png: bytes) -> None:
    loads, load = counting_loader(png)
    cache = ConvertedCache()
    first = cache.get(KEY, WEBP, load)
    assert cache.get(KEY, WEBP, load) is first
    assert loads == [KEY]
    assert cache.get(KEY, PNG, load) is png  # PNG is read from the store each time
    small = ConvertedCache(max_bytes=len(first) + 10)
    small.get(KEY, WEBP, load)
    small.get("b" * 64 + ".png", WEBP, load)
    assert len(small._items) == 1 and small._size <= small.max_bytes


def test_missing_png_propagates_key_error() -> None:
    def load(key: str) -> bytes:
        raise KeyError(key)

    with pytest.raises(KeyError):
        ConvertedCache().get(KEY, JPEG, load)


def test_a_forgotten_image_is_converted_again(png: bytes) -> None:
    loads, load = counting_loader(png)
    cache = ConvertedCache()
    cache.get(KEY, WEBP, load)
    cache.get(KEY, JPEG, load)
    cache.forget(KEY)
    assert cache._size == 0 and not cache._items
    cache.get(KEY, WEBP, load)
    assert loads == [KEY, KEY, KEY]
