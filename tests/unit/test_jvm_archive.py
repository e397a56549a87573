"""The broker's class-data archive is kept only if a JVM maps it (``maas/jvm_archive.py``;
that a broker writes one and the next start maps it is tested in
``tests/integration/test_broker.py``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from maas import jvm_archive
from maas.broker import JVM_FLAGS

JAVA = shutil.which("java")
pytestmark = pytest.mark.skipif(JAVA is None, reason="needs java")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "maas"


def test_without_an_archive_a_broker_writes_one_into_its_home(cache: Path, tmp_path: Path) -> None:
    assert JAVA is not None
    flags = jvm_archive.start_flags(JAVA, "a.jar", JVM_FLAGS, tmp_path)
    assert f"-XX:ArchiveClassesAtExit={tmp_path / jvm_archive.DUMP_NAME}" in flags


@pytest.mark.parametrize("content", [b"", b"\x00" * 4096, b"not an archive at all"])
def test_a_dump_no_jvm_maps_is_dropped_not_cached(
    cache: Path, tmp_path: Path, content: bytes
) -> None:
    """A torn archive crashed the JVM (SIGBUS) at start: it must never reach the cache."""
    assert JAVA is not None
    (tmp_path / jvm_archive.DUMP_NAME).write_bytes(content)
    jvm_archive.adopt(JAVA, "a.jar", JVM_FLAGS, tmp_path)
    assert not (tmp_path / jvm_archive.DUMP_NAME).exists()
    assert not cache.exists() or list(cache.iterdir()) == []
    assert "-XX:SharedArchiveFile" not in " ".join(
        jvm_archive.start_flags(JAVA, "a.jar", JVM_FLAGS, tmp_path)
    )


def test_the_archive_is_named_for_the_classpath_and_flags(cache: Path) -> None:
    assert JAVA is not None
    one = jvm_archive.archive_path(JAVA, "a.jar", JVM_FLAGS)
    assert one.parent == cache
    assert jvm_archive.archive_path(JAVA, "b.jar", JVM_FLAGS) != one
    assert jvm_archive.archive_path(JAVA, "a.jar", [*JVM_FLAGS, "-Xmx1g"]) != one
