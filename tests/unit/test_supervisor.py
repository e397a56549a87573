"""The supervisor restarts a dead child at once, and backs off only for a crash loop."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from maas.supervisor import CRASH_LOOP_S, Child, restart_delay_s, supervise


@pytest.mark.parametrize(
    ("lived_s", "quick_exits", "delay_s", "after"),
    [
        (60.0, 0, 0.0, 0),  # killed after running a while: at once
        (60.0, 4, 0.0, 0),  # a healthy run ends a crash loop
        (0.2, 0, 0.0, 1),  # a first quick exit: at once too
        (0.2, 1, 0.5, 2),  # then 0.5 s, 1 s, 2 s...
        (0.2, 2, 1.0, 3),
        (0.2, 3, 2.0, 4),
        (0.2, 20, 30.0, 21),  # ...never more than 30 s
    ],
)
def test_restart_delay(lived_s: float, quick_exits: int, delay_s: float, after: int) -> None:
    assert restart_delay_s(lived_s, quick_exits) == (delay_s, after)


class SleepChild(Child):
    """A child whose process is ``sleep``, so that no service process is started."""

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        self.started_at = time.monotonic()


def test_a_killed_child_is_restarted_at_once(tmp_path: Path) -> None:
    child = SleepChild("processor", tmp_path / "processor.log", "127.0.0.1", 8000)
    child.start({})
    child.started_at -= CRASH_LOOP_S + 1  # it has been running for a while
    first = child.process
    assert first is not None
    first.kill()
    first.wait()
    supervise(child, {}, time.monotonic())
    try:
        assert child.process is not first and child.process.poll() is None
        assert child.restart_at is None
    finally:
        child.process.kill()
        child.process.wait()
