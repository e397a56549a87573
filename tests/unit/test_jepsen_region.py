"""The Jepsen region's own supervision (``tests/jepsen/region.py``), on real processes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.jepsen.region import Region


def test_a_killed_child_has_exited_when_kill_returns(tmp_path: Path) -> None:
    # A lane behind its schedule runs the next fault at once; aimed at the same child, it
    # must find it gone (and wait for its restart), not stop the dead pid.
    region = Region("127.0.0.1:9", tmp_path)  # never started: nothing asks the broker
    child = region.children["api"]
    for _ in range(20):
        child.popen = subprocess.Popen(["sleep", "60"])
        assert region.kill("api") == child.popen.pid
        assert child.pid() is None
