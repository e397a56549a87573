"""A rolling restart replaces each child in turn: the replacement starts while its
predecessor serves, the predecessor is stopped once the replacement is warm, and the
next child is replaced only once this one serves. It halts at a replacement that does
not get warm (keeping the predecessor) or does not serve, and kills a predecessor that
does not stop.

The children here are small Python processes, started by the supervisor's own
``Child.start`` and restarted by its own ``supervise``; only the command they run is
replaced (``start_process``). Each waits for its predecessor with the real
``take_over``, touches the ready file its supervisor names once it "serves", notes each
step in a shared event log, and exits on SIGTERM, unless the control file says otherwise.
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

from core import readiness
from core.settings import Settings
from maas import supervisor
from maas.cli import main
from maas.processes import process_env, ready_file
from maas.rolling import PID_FILE, STATUS_FILE, Roll, RollStatus, in_roll_order, request
from maas.supervisor import CRASH_LOOP_S, Child, children, supervise

CHILD = """
import os, pathlib, signal, sys, time
from core.readiness import mark_ready, take_over
ready = pathlib.Path(os.environ["MAAS_READY_FILE"])
control = pathlib.Path(os.environ["FAKE_CONTROL"])
events = pathlib.Path(os.environ["FAKE_EVENTS"])
rules = control.read_text().split() if control.exists() else []
def note(what):
    with events.open("a") as log:
        log.write(f"{time.time()} {ready.name} {os.getpid()} {what}\\n")
def stop(*_):
    note("stopped")
    sys.exit(0)
note("started")
signal.signal(signal.SIGTERM, signal.SIG_IGN if "ignore-term:" + ready.name in rules else stop)
time.sleep(0.2)  # imports, loads
while "never-warm:" + ready.name in rules:
    time.sleep(1)
crashed = ready.with_name(ready.name + ".crashed")
if "crash-once:" + ready.name in rules and not crashed.exists():
    crashed.touch()
    sys.exit(1)
predecessor = os.environ.get("MAAS_PREDECESSOR_PID")
take_over(ready, int(predecessor) if predecessor else None)
note("took over")
if "never-ready:" + ready.name not in rules:
    mark_ready(ready)
    note("ready")
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
    env = {**os.environ, "FAKE_CONTROL": str(control), "FAKE_EVENTS": str(tmp_path / "events")}
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


def drive(procs: list[Child], roll: Roll, env: dict, timeout_s: float = 60) -> None:
    """The supervisor's loop until the roll ends."""
    give_up = time.monotonic() + timeout_s
    while roll.rolling:
        assert time.monotonic() < give_up, roll.status
        now = time.monotonic()
        for child in procs:
            supervise(child, env, now)
        roll.step(now)
        time.sleep(0.02)


def events(tmp_path: Path) -> dict[tuple[int, str], float]:
    """(pid, step) -> when, from the children's shared event log."""
    noted = {}
    for line in (tmp_path / "events").read_text().splitlines():
        at, _, pid, step = line.split(" ", 3)
        noted[int(pid), step] = float(at)
    return noted


def stop_all(procs: list[Child]) -> None:
    for child in procs:
        if child.process is not None:
            child.process.kill()
            child.process.wait()


def test_each_child_is_replaced_while_it_serves_and_one_at_a_time(
    tmp_path: Path, control: Path
) -> None:
    procs, env = started(tmp_path, control, ["a", "b", "c"])
    old = [c.process for c in procs]
    try:
        roll = Roll(procs, tmp_path / STATUS_FILE, env)
        drive(procs, roll, env)
        new = [c.process for c in procs]
    finally:
        stop_all(procs)

    assert roll.status.state == "done"
    assert roll.status.restarted == ["a", "b", "c"]
    assert RollStatus.read(tmp_path / STATUS_FILE) == roll.status
    at = events(tmp_path)
    for i, (before, after) in enumerate(zip(old, new, strict=True)):
        assert before is not None and after is not None and after is not before
        assert before.returncode == 0  # stopped gracefully
        # The replacement started while its predecessor served, and took over after it.
        assert at[after.pid, "started"] < at[before.pid, "stopped"]
        assert at[before.pid, "stopped"] < at[after.pid, "took over"] < at[after.pid, "ready"]
        if i + 1 < len(old):  # the next is stopped only once this one serves
            assert at[after.pid, "ready"] < at[old[i + 1].pid, "stopped"]  # type: ignore[union-attr]


def test_a_replacement_that_never_gets_warm_is_killed_and_its_predecessor_kept(
    tmp_path: Path, control: Path
) -> None:
    procs, env = started(tmp_path, control, ["a", "b", "c"])
    control.write_text("never-warm:b")
    kept, untouched = procs[1].process, procs[2].process
    try:
        roll = Roll(procs, tmp_path / STATUS_FILE, env, ready_timeout_s=1.0)
        drive(procs, roll, env)
        for _ in range(10):  # the supervisor keeps looking after the one it kept
            supervise(procs[1], env, time.monotonic())
        assert kept is not None and kept.poll() is None and procs[1].process is kept
        assert untouched is not None and untouched.poll() is None
    finally:
        stop_all(procs)

    assert roll.status.state == "halted"
    assert roll.status.restarted == ["a"]
    assert roll.status.error == "b's replacement was not warm within 1 s"
    assert procs[2].process is untouched


def test_a_replacement_that_does_not_serve_halts_the_roll(tmp_path: Path, control: Path) -> None:
    procs, env = started(tmp_path, control, ["a", "b", "c"])
    control.write_text("never-ready:b")
    untouched = procs[2].process
    try:
        roll = Roll(procs, tmp_path / STATUS_FILE, env, ready_timeout_s=1.0)
        drive(procs, roll, env)
        assert untouched is not None and untouched.poll() is None
    finally:
        stop_all(procs)

    assert roll.status.state == "halted"
    assert roll.status.restarted == ["a"]
    assert roll.status.error == "b did not serve within 1 s"


def test_a_replacement_that_crashes_is_started_again_and_its_predecessor_stopped(
    tmp_path: Path, control: Path
) -> None:
    """The supervisor starts the crashed replacement again, as any child, without a
    predecessor to wait for; the roll stops the predecessor at once and goes on."""
    procs, env = started(tmp_path, control, ["a", "b"])
    control.write_text("crash-once:a")
    before = procs[0].process
    try:
        roll = Roll(procs, tmp_path / STATUS_FILE, env)
        drive(procs, roll, env)
    finally:
        stop_all(procs)

    assert roll.status.state == "done"
    assert roll.status.restarted == ["a", "b"]
    assert before is not None and before.returncode == 0
    assert (tmp_path / "ready" / "a.crashed").exists()


def test_a_predecessor_that_does_not_stop_is_killed(tmp_path: Path, control: Path) -> None:
    control.write_text("ignore-term:a")
    procs, env = started(tmp_path, control, ["a"])
    stubborn = procs[0].process
    try:
        roll = Roll(procs, tmp_path / STATUS_FILE, env, stop_timeout_s=0.5)
        drive(procs, roll, env)
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
        "sweeper",
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


def test_a_predecessor_is_gone_once_it_exits_even_while_its_stat_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``take_over`` polls its predecessor's ``/proc/<pid>/stat`` until it has exited.

    We expect: a live process is running; an exited one is not, as a zombie, once reaped,
    and when it is reaped between the open and the read of its stat file (the kernel then
    fails the read with ESRCH; in CI that crashed a replacement at its take-over)."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert readiness.running(sleeper.pid)
    stale = open(f"/proc/{sleeper.pid}/stat", "rb")  # noqa: SIM115 (closed below)
    try:
        sleeper.kill()
        deadline = time.monotonic() + 10
        while readiness.running(sleeper.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not readiness.running(sleeper.pid)  # a zombie: not reaped yet
        sleeper.wait()
        assert not readiness.running(sleeper.pid)  # reaped: no stat file
        monkeypatch.setattr(readiness, "open", lambda *_: stale, raising=False)
        assert not readiness.running(sleeper.pid)  # reaped after the open
    finally:
        stale.close()
