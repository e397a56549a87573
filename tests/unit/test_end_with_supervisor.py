"""A child of ``maas up`` ends when its supervisor does, even killed (``kill -9``, the OOM
killer): before, every child was left running unsupervised, an API still answering on
the port. The child here is the sweeper, the lightest process ``maas up`` starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.readiness import running
from maas.processes import SUPERVISOR_PID_VARIABLE, process_command

# A stand-in supervisor: starts one child as maas up does, says its pid, then waits.
SUPERVISOR = """
import os, sys, time
from pathlib import Path
from maas.processes import SUPERVISOR_PID_VARIABLE, start_process
env = dict(os.environ)
if sys.argv[1] == "supervised":
    env[SUPERVISOR_PID_VARIABLE] = str(os.getpid())
child = start_process("sweeper", env, Path(sys.argv[2]), ready=Path(sys.argv[3]))
print(child.pid, flush=True)
time.sleep(600)
"""


def wait_for(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def killed_supervisor_leaves(mode: str, tmp_path: Path) -> int:
    """Start a supervisor and its child, kill -9 the supervisor; the child's pid."""
    ready = tmp_path / "ready"
    env = {**os.environ, "MAAS_DATA_DIR": str(tmp_path)}
    env.pop(SUPERVISOR_PID_VARIABLE, None)
    with subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, mode, str(tmp_path / "child.log"), str(ready)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    ) as supervisor:
        assert supervisor.stdout is not None
        child = int(supervisor.stdout.readline())
        wait_for(ready.exists, 30, "the child never said it serves")
        supervisor.kill()
    return child


def test_a_child_of_a_killed_supervisor_ends(tmp_path: Path) -> None:
    child = killed_supervisor_leaves("supervised", tmp_path)
    wait_for(lambda: not running(child), 10, "the child outlived its supervisor")
    said = (tmp_path / "child.log").read_text()
    assert "image sweeps every" in said and "Traceback" not in said


def test_a_process_no_supervisor_started_is_left_alone(tmp_path: Path) -> None:
    child = killed_supervisor_leaves("alone", tmp_path)
    try:
        time.sleep(1)
        assert running(child)
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_child_whose_supervisor_is_already_gone_ends_at_once(tmp_path: Path) -> None:
    # Its parent is this test, not the supervisor it names: that one has ended already.
    env = {**os.environ, "MAAS_DATA_DIR": str(tmp_path), SUPERVISOR_PID_VARIABLE: "1"}
    child = subprocess.run(process_command("sweeper"), env=env, timeout=30, capture_output=True)
    assert child.returncode == -signal.SIGTERM, child.stderr
