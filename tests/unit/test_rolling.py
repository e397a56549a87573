"""A rolling restart restarts each child in turn, the next only once the last serves again;
it halts at a child that does not serve, and kills one that does not stop.

The children here are small Python processes, started by the supervisor's own
``Child.start`` and restarted by its own ``supervise``; only the command they run is
replaced (``start_process``). Each touches the ready file its supervisor names once it
"serves", and exits on SIGTERM, unless the control file tells it otherwise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from maas import supervisor
from maas.cli import main
from maas.processes import process_env, ready_file
from maas.rolling import PID_FILE, STATUS_FILE, Roll, RollStatus, in_roll_order, request
from maas.supervisor import CRASH_LOOP_S, Child, children, supervise

CHILD = """
import os, pathlib, signal, sys, time
from core.readiness import mark_ready
ready = pathlib.Path(os.environ["MAAS_READY_FILE"])
control = pathlib.Path(os.environ["FAKE_CONTROL"])
rules = control.read_text().split() if control.exists() else []
if "ignore-term:" + ready.name in rules:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(0.2)  # starting
if "never-ready:" + ready.name not in rules:
    mark_ready(ready)
while True:
    time.sleep(1)
"""


def fake_start_process(
    name: str, env: dict[str, str], log_path: Path, **where: Any
) -> subprocess.Popen[bytes]:
    environment = process_env(name, env, where["instance_id"], where["heartbeat"], where["ready"])
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", CHILD], env=environment, stdout=log, stderr=subprocess.STDOUT
        )


@pytest.fixture
def control(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(supervisor, "start_process", fake_start_process)
    return tmp_path / "control"


def started(tmp_path: Path, control: Path, names: list[str]) -> tuple[list[Child], dict]:
    env = {**os.environ, "FAKE_CONTROL": str(control)}
    procs = [
        Child(name, tmp_path / f"{name}.log", "", 0, ready_file=ready_file(tmp_path, name))
        for name in names
    ]
    for child in procs:
        child.start(env)
        child.started_at -= CRASH_LOOP_S + 1  # running for a while: restarted at once
    give_up = time.monotonic() + 30
    while not all(c.ready_file and c.ready_file.exists() for c in procs):
        assert time.monotonic() < give_up, "the children never served"
        time.sleep(0.02)
    return procs, env


def drive(procs: list[Child], env: dict, roll: Roll, timeout_s: float = 60) -> list[int]:
    """The supervisor's loop until the roll ends; how many children were down at each look."""
    down = []
    give_up = time.monotonic() + timeout_s
    while roll.rolling:
        assert time.monotonic() < give_up, roll.status
        now = time.monotonic()
        for child in procs:
            supervise(child, env, now)
        roll.step(now)
        down.append(sum(not (c.ready_file and c.ready_file.exists()) for c in procs))
        time.sleep(0.02)
    return down


def stop_all(procs: list[Child]) -> None:
    for child in procs:
        if child.process is not None:
            child.process.kill()
            child.process.wait()


def test_each_child_is_restarted_in_turn_and_never_two_are_down(
    tmp_path: Path, control: Path
) -> None:
    procs, env = started(tmp_path, control, ["a", "b", "c"])
    first = [c.process for c in procs]
    try:
        roll = Roll(list(procs), tmp_path / STATUS_FILE)
        down = drive(procs, env, roll)
    finally:
        stop_all(procs)

    assert roll.status.state == "done"
    assert roll.status.restarted == ["a", "b", "c"]
    assert all(c.process is not p for c, p in zip(procs, first, strict=True))
    assert all(p is not None and p.returncode == 0 for p in first)  # stopped gracefully
    assert max(down) == 1  # one at a time, and each restart was seen
    assert RollStatus.read(tmp_path / STATUS_FILE) == roll.status


def test_a_child_that_does_not_serve_halts_the_roll(tmp_path: Path, control: Path) -> None:
    procs, env = started(tmp_path, control, ["a", "b", "c"])
    control.write_text("never-ready:b")  # its next start never serves
    untouched = procs[2].process
    try:
        roll = Roll(list(procs), tmp_path / STATUS_FILE, ready_timeout_s=1.0)
        drive(procs, env, roll)
        assert untouched is not None and untouched.poll() is None  # c was left running
    finally:
        stop_all(procs)

    assert roll.status.state == "halted"
    assert roll.status.restarted == ["a"]
    assert roll.status.error == "b did not serve within 1 s"
    assert procs[2].process is untouched


def test_a_child_that_does_not_stop_is_killed(tmp_path: Path, control: Path) -> None:
    control.write_text("ignore-term:a")
    procs, env = started(tmp_path, control, ["a"])
    stubborn = procs[0].process
    try:
        roll = Roll(list(procs), tmp_path / STATUS_FILE, stop_timeout_s=0.5)
        drive(procs, env, roll)
    finally:
        stop_all(procs)

    assert roll.status.state == "done"
    assert stubborn is not None and stubborn.returncode == -signal.SIGKILL


def test_the_ledger_processors_roll_last(tmp_path: Path) -> None:
    """They write what the others read strictly; the others write only inputs, which an
    older processor reads whatever a newer writer adds."""
    counts = {"processor": 2, "generator-standard": 2, "generator-ai": 1, "api": 2}
    procs = children(Settings(data_dir=tmp_path), "127.0.0.1", 8000, counts)
    assert [c.label for c in in_roll_order(procs)] == [
        "api-0",
        "api-1",
        "generator-standard-0",
        "generator-standard-1",
        "generator-ai-0",
        "usage",
        "checkpointer",
        "processor-0",
        "processor-1",
    ]


# A ``maas up`` that answers a roll request at once, as the real one does when done.
SUPERVISOR = """
import json, os, signal, sys, time
status = sys.argv[1]
def roll(*_):
    with open(status, "w") as f:
        json.dump({"state": "done", "started_at": time.time(), "restarted": ["api-0"],
                   "current": None, "error": None}, f)
signal.signal(signal.SIGUSR2, roll)
print("listening", flush=True)
time.sleep(60)
"""


def test_request_asks_the_supervisor_and_returns_its_outcome(tmp_path: Path) -> None:
    fake = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(tmp_path / STATUS_FILE), "up"],
        stdout=subprocess.PIPE,
    )
    assert fake.stdout is not None
    try:
        assert fake.stdout.readline() == b"listening\n"
        (tmp_path / PID_FILE).write_text(str(fake.pid))
        status = request(tmp_path, timeout_s=10)
    finally:
        fake.kill()
        fake.wait()
        fake.stdout.close()
    assert (status.state, status.restarted) == ("done", ["api-0"])


def test_request_says_why_it_cannot_ask(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="maas up is not running here \\(no pid in"):
        request(tmp_path, timeout_s=1)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / PID_FILE).write_text(str(gone.pid))
    with pytest.raises(RuntimeError, match=f"names pid {gone.pid}"):
        request(tmp_path, timeout_s=1)
    (tmp_path / PID_FILE).write_text(str(os.getpid()))  # alive, but not maas up
    with pytest.raises(RuntimeError, match=f"names pid {os.getpid()}"):
        request(tmp_path, timeout_s=1)
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "up"])
    try:
        (tmp_path / PID_FILE).write_text(str(busy.pid))
        RollStatus("rolling", time.time(), current="api-0").write(tmp_path / STATUS_FILE)
        with pytest.raises(RuntimeError, match="a rolling restart is already under way"):
            request(tmp_path, timeout_s=1)
    finally:
        busy.kill()
        busy.wait()


def test_maas_restart_without_maas_up_exits_1_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAAS_DATA_DIR", str(tmp_path))
    assert main(["restart"]) == 1
    assert f"maas restart: maas up is not running here (no pid in {tmp_path}" in (
        capsys.readouterr().err
    )
