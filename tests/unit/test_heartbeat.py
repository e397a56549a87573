"""A supervisor's watch on a heartbeat file: a change of the file is a beat, a process
silent past its allowance is reported, and a file an earlier process left is no beat."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from core.heartbeat import START_GRACE_S, HeartbeatWatch, beat

LIMIT_S = 10.0


def touch_at(path: Path, wall_s: float) -> None:
    """A beat, its modification time set explicitly: the watch must not read it as a time."""
    path.touch()
    os.utime(path, ns=(int(wall_s * 1e9), int(wall_s * 1e9)))


def test_a_process_that_beats_is_never_reported(tmp_path: Path) -> None:
    path = tmp_path / "api-0"
    watch = HeartbeatWatch.start(path, LIMIT_S, now=100.0)
    for n in range(1, 30):
        # Beats 9 s apart, the wall clock stepping back each time: each is still a change.
        touch_at(path, 1_000_000.0 - n)
        assert watch.silent_s(100.0 + 9 * n) is None


def test_a_silent_process_is_reported_once_past_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "api-0"
    watch = HeartbeatWatch.start(path, LIMIT_S, now=100.0)
    touch_at(path, 1.0)
    assert watch.silent_s(101.0) is None  # the first beat, seen at 101
    assert watch.silent_s(101.0 + LIMIT_S) is None
    assert watch.silent_s(101.5 + LIMIT_S) == LIMIT_S + 0.5


def test_before_its_first_beat_a_process_has_the_start_grace(tmp_path: Path) -> None:
    path = tmp_path / "api-0"
    touch_at(path, 1.0)  # left by the process before this one: no beat of this one
    watch = HeartbeatWatch.start(path, LIMIT_S, now=100.0)
    assert watch.silent_s(100.0 + START_GRACE_S) is None
    assert watch.silent_s(101.0 + START_GRACE_S) == START_GRACE_S + 1.0


def test_a_deleted_file_is_no_beat(tmp_path: Path) -> None:
    path = tmp_path / "api-0"
    watch = HeartbeatWatch.start(path, LIMIT_S, now=100.0)
    touch_at(path, 1.0)
    assert watch.silent_s(101.0) is None
    path.unlink()
    assert watch.silent_s(102.0 + LIMIT_S) == LIMIT_S + 1.0


def test_the_beat_touches_its_file_while_the_loop_runs(tmp_path: Path) -> None:
    path = tmp_path / "heartbeats" / "api-0"

    async def run_a_while() -> list[int]:
        task = asyncio.create_task(beat(path, interval_s=0.02))
        seen = []
        for _ in range(5):
            await asyncio.sleep(0.05)
            seen.append(path.stat().st_mtime_ns)
        task.cancel()
        return seen

    seen = asyncio.run(run_a_while())
    assert len(set(seen)) == len(seen), seen  # a new time at every look
