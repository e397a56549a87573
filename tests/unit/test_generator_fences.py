"""The twin rule of a generator pool's process: the third fence within a minute ends it
(two pools given one instance id), unless the pool had just lost its broker, as every
pool does in a broker restart (its session runs out meanwhile, and its rejoin is fenced)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.blobstore import LocalBlobStore
from core.settings import Settings
from processors.generators.worker import FENCES_WINDOW_S, MAX_FENCES, Fences, GeneratorPool


def test_the_third_fence_within_the_window_suspects_a_twin() -> None:
    fences = Fences()
    assert [fences.twin_suspected(at, None) for at in (0.0, 5.0, 10.0)] == [False, False, True]


def test_fences_further_apart_than_the_window_suspect_nothing() -> None:
    fences = Fences()
    step = FENCES_WINDOW_S / (MAX_FENCES - 1)
    assert not any(fences.twin_suspected(i * step, None) for i in range(10))


@pytest.mark.parametrize("since_s", [0.5, FENCES_WINDOW_S - 1])
def test_a_fence_after_a_lost_broker_is_not_counted(since_s: float) -> None:
    """Two broker restarts fence the pool between fences of a twin: those two are not
    counted, the twin's three still are."""
    fences = Fences()
    assert not fences.twin_suspected(0.0, None)
    assert not fences.twin_suspected(20.0, 20.0 - since_s)
    assert not fences.twin_suspected(30.0, 30.0 - since_s)
    assert not fences.twin_suspected(40.0, None)
    assert fences.twin_suspected(50.0, None)


def test_a_pool_whose_broker_is_gone_notes_it(tmp_path: Path) -> None:
    """Scenario: nothing listens at the pool's bootstrap address.
    We expect: its consumer's error events (real librdkafka) mark the broker lost."""
    settings = Settings(bootstrap_servers="127.0.0.1:1", region="gone")
    pool = GeneratorPool(settings, "standard", blobs=LocalBlobStore(tmp_path, fsync=False))
    try:
        give_up = time.monotonic() + 10
        while pool.lost_broker.at is None and time.monotonic() < give_up:
            pool.consumer.poll(0.2)  # error events are served here
        assert pool.lost_broker.at is not None
    finally:
        pool.consumer.close()
        pool.executor.shutdown()
