"""Each benchmark's smoke mode: tiny sizes, a few seconds, the same code path as a full
run. A benchmark that no longer runs (an import moved, a signature changed) fails here,
not on the day someone needs its numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.benchmark


@pytest.mark.parametrize("script", ["render_bench.py", "replay_bench.py"])
def test_smoke_mode_runs(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
