"""``maas blobs sweep``: the images past their retention go, the others stay; ``--loop``
sweeps until stopped, as ``maas up`` runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.blobstore import LocalBlobStore
from maas.cli import main
from maas.processes import process_command

DAY_S = 86_400


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalBlobStore:
    monkeypatch.setenv("MAAS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MAAS_IMAGE_RETENTION_HOURS", raising=False)
    return LocalBlobStore(tmp_path / "blobs")


def made_days_ago(store: LocalBlobStore, data: bytes, days: float) -> str:
    key = store.put(data)
    when = time.time() - days * DAY_S
    os.utime(store.path(key), (when, when))
    return key


def test_a_sweep_deletes_the_images_not_made_within_the_retention(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, recent = made_days_ago(store, b"eight days", 8), made_days_ago(store, b"six days", 6)
    assert main(["blobs", "sweep"]) == 0
    assert old not in store and recent in store

    monkeypatch.setenv("MAAS_IMAGE_RETENTION_HOURS", "24")
    assert main(["blobs", "sweep"]) == 0
    assert recent not in store


def test_a_retention_of_zero_keeps_every_image(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = made_days_ago(store, b"a year", 365)
    monkeypatch.setenv("MAAS_IMAGE_RETENTION_HOURS", "0")
    assert main(["blobs", "sweep"]) == 0
    assert old in store


def test_a_negative_retention_is_refused_in_one_line(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAAS_IMAGE_RETENTION_HOURS", "-1")
    assert main(["blobs", "sweep"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maas blobs: MAAS_IMAGE_RETENTION_HOURS='-1'") and err.count("\n") == 1


def test_the_sweeper_of_maas_up_sweeps_until_stopped(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    old = made_days_ago(store, b"eight days", 8)
    ready = tmp_path / "ready" / "sweeper"
    env = {
        **os.environ,
        "MAAS_DATA_DIR": str(tmp_path),
        "MAAS_READY_FILE": str(ready),
        "MAAS_IMAGE_SWEEP_INTERVAL_S": "1",
    }
    env.pop("MAAS_IMAGE_RETENTION_HOURS", None)
    command = process_command("sweeper")
    assert command[0] == sys.executable
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as sweeper:
        try:
            deadline = time.monotonic() + 30
            while old in store or not ready.exists():
                assert sweeper.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            later = made_days_ago(store, b"nine days", 9)  # found by the next round
            while later in store:
                assert sweeper.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            sweeper.send_signal(signal.SIGTERM)
            _, err = sweeper.communicate(timeout=10)
    assert sweeper.returncode == 0, err
    assert "image sweep deleted=1" in err
