"""``maas up`` as the scenarios run it: a child process of its own session (so that a
Ctrl-C of the test run reaches it only through the test), its output in a log."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

UP_BANNER = "MaaS Ledger is up"


def start_up(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``maas up <args>``, its output to ``log``; waits until it says it is up (at most
    150 s). If it exits or takes longer, it is stopped and the test fails with the
    log's end."""
    with log.open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "maas.cli", "up", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    give_up = time.monotonic() + 150
    while UP_BANNER not in log.read_text():
        if up.poll() is not None or time.monotonic() > give_up:
            up.send_signal(signal.SIGINT)  # Ctrl-C: every child, then the broker
            up.wait(90)
            raise AssertionError(f"maas up did not come up:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    return up
