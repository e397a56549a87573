"""Each benchmark's smoke mode: tiny sizes, a few seconds, the same code path as a full
run. A benchmark that no longer runs (an import moved, a signature changed) fails here,
not on the day someone needs its numbers. Each must exit 0 and print its result line.

The benchmarks that need Kafka get the session's broker through
``KAFKA_BOOTSTRAP_SERVERS``, so no second broker starts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300

pytestmark = pytest.mark.benchmark


def run_smoke(script: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--smoke"],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


# The last line each benchmark prints with its figures, as a pattern.
WITHOUT_KAFKA = {
    "analysis_example.py": r"^analysis: regions=2 ledger_entries=[1-9]\d* seconds=",
    "render_bench.py": r"^\| convert_jpeg \| \d+ .* \| \d+\.\d+x \|$",
    "replay_bench.py": r"^what-if/replay=\d+\.\d+$",
    "store_bench.py": r"^store/baseline: absent \d+\.\d+x, present \d+\.\d+x$",
}
WITH_KAFKA = {
    "bridge_bench.py": (
        r"^bridge: \d+ us per call, baseline \d+ us per call, bridge/baseline \d+\.\d+x$"
    ),
    # The open-loop run against the service and the bare app (bare_app.py), compared.
    "http_bench.py": r"^  service/bare at \d+ req/s: p50 \d+\.\d+x, p99 \d+\.\d+x$",
    # Idle CPU of the whole service against the broker alone (no broker figure here:
    # the session's broker is not the benchmark's own).
    "idle_bench.py": r"^idle: total=\d+\.\d% of one core broker\(c\)/broker\(a\)=(n/a|\d+\.\d+x)$",
    "processor_bench.py": (
        r"^processor: exactly_once=\d+/s instances=2: \d+/s \(\d+\.\d+x of one\) "
        r"at_least_once=\d+/s ratio=\d+\.\d+"
    ),
    # The catch-up against the bare loop, then the live cost per request.
    "usage_bench.py": (
        r"^\(a\)/\(b\): wall \d+\.\d+x, per core \d+\.\d+x$[\s\S]*"
        r"^\(c\) live at \d+ requests/s: usage \d+\.\d% of a core, \d+\.\d+ ms per request"
    ),
}


@pytest.mark.parametrize("script", sorted(WITHOUT_KAFKA))
def test_smoke_mode_runs(script: str) -> None:
    out = run_smoke(script)
    assert re.search(WITHOUT_KAFKA[script], out, re.MULTILINE), out[-2000:]


@pytest.mark.kafka
@pytest.mark.parametrize("script", sorted(WITH_KAFKA))
def test_smoke_mode_runs_on_the_session_broker(script: str, kafka: Any) -> None:
    out = run_smoke(script, {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap})
    assert re.search(WITH_KAFKA[script], out, re.MULTILINE), out[-2000:]
