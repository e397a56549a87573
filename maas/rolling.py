"""A rolling restart of ``maas up``'s processes: a deploy without downtime.

``maas restart`` (or ``kill -USR2 <pid of maas up>``) asks the supervisor to restart
every child in turn, so that each runs the code now on disk. The ledger processors go
last (``ROLL_ORDER``): they write what the others read strictly (replies, approvals,
ledger entries), while the others write only inputs, which an older processor reads
whatever a newer writer adds (``docs/architecture.md``); so at every moment of a deploy
each reader is at least as new as what it reads. For each child:

1. SIGTERM: its graceful stop (an API answers the calls it holds and stops taking
   connections, which go to the other API processes on the port; a ledger processor
   ends between transactions; a generator pool finishes its renders);
2. the supervisor restarts it once it has exited, as it restarts any child
   (``maas.supervisor.supervise``); one still running after ``STOP_TIMEOUT_S`` is killed;
3. the next child waits until this one serves again: until it has touched its ready
   file (``core/readiness.py``). The instances of a kind are never down together.

A child that does not serve within ``READY_TIMEOUT_S`` halts the roll: restarting the
next could take a second instance of its kind down. The supervisor still restarts it if
it exits, as always. Progress goes to the supervisor's log and to ``roll.json`` in the
data dir (``RollStatus``), which ``maas restart`` waits on.

A static member of a consumer group (a ledger processor, a generator pool) takes its own
partitions back when it returns, so each restart stalls only that instance's partitions,
for as long as it takes to start (about a second here: ``docs/reliability.md``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol

log = logging.getLogger("maas.up")

ROLL_SIGNAL = signal.SIGUSR2
ROLL_ORDER = ("api", "generator-standard", "generator-ai", "usage", "checkpointer", "processor")
STOP_TIMEOUT_S = 30.0  # an API's graceful stop waits for its calls (5 s deadlines)
READY_TIMEOUT_S = 120.0  # a restart on a saturated machine has taken tens of seconds
PID_FILE = "up.pid"
STATUS_FILE = "roll.json"

RollState = Literal["rolling", "done", "halted"]


class Rollable(Protocol):
    """What a roll needs of a supervised child (``maas.supervisor.Child``)."""

    @property
    def name(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def process(self) -> subprocess.Popen[bytes] | None: ...
    @property
    def ready_file(self) -> Path | None: ...


@dataclass
class RollStatus:
    """What ``roll.json`` says: the last roll's state, for ``maas restart``."""

    state: RollState
    started_at: float  # wall clock, seconds
    restarted: list[str] = field(default_factory=list)  # labels, in order
    current: str | None = None
    error: str | None = None

    def write(self, path: Path) -> None:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self)), encoding="utf-8")
        temporary.replace(path)  # a reader never sees half a file

    @classmethod
    def read(cls, path: Path) -> RollStatus | None:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None


def in_roll_order(children: Sequence[Rollable]) -> list[Rollable]:
    """The children in the order a roll restarts them (``ROLL_ORDER``), each kind's
    instances in their own order."""
    return sorted(children, key=lambda child: ROLL_ORDER.index(child.name))


class Roll:
    """One rolling restart, advanced by the supervisor's loop (``step``) between its
    looks at the children, so that the others stay supervised meanwhile."""

    def __init__(
        self,
        children: Sequence[Rollable],
        status_path: Path,
        *,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        self.children = children
        self.status_path = status_path
        self.stop_timeout_s = stop_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.status = RollStatus("rolling", time.time())
        self._next = 0
        self._stopping: subprocess.Popen[bytes] | None = None  # the process being replaced
        self._restarted = False  # whether the supervisor has started its successor
        self._stopped_at = 0.0
        self._deadline = 0.0
        log.info("rolling restart started processes=%d", len(children))
        self.status.write(status_path)

    @property
    def rolling(self) -> bool:
        return self.status.state == "rolling"

    def step(self, now: float) -> None:
        """Advance as far as the children allow."""
        while self.rolling:
            child = self.children[self._next]
            if self._stopping is None:
                self._stop(child, now)
            elif child.process is self._stopping:  # not restarted yet
                if self._stopping.poll() is None and now > self._deadline:
                    log.warning(
                        "rolling restart: process=%s did not stop within %.0f s; killing it",
                        child.label,
                        self.stop_timeout_s,
                    )
                    self._stopping.kill()
                return
            elif not self._restarted:
                self._restarted, self._deadline = True, now + self.ready_timeout_s
            elif child.ready_file is not None and child.ready_file.exists():
                self._served(child, now)
            elif now > self._deadline:
                self._halt(f"{child.label} did not serve within {self.ready_timeout_s:.0f} s")
            else:
                return

    def _stop(self, child: Rollable, now: float) -> None:
        process = child.process
        assert process is not None
        self._stopping, self._stopped_at = process, now
        self._deadline = now + self.stop_timeout_s
        self.status.current = child.label
        self.status.write(self.status_path)
        log.info("rolling restart: stopping process=%s pid=%d", child.label, process.pid)
        if process.poll() is None:
            process.terminate()

    def _served(self, child: Rollable, now: float) -> None:
        log.info(
            "rolling restart: process=%s serves again after %.1f s",
            child.label,
            now - self._stopped_at,
        )
        self.status.restarted.append(child.label)
        self._stopping, self._restarted = None, False
        self._next += 1
        if self._next == len(self.children):
            self.status.state, self.status.current = "done", None
            log.info("rolling restart done processes=%d", len(self.children))
        self.status.write(self.status_path)

    def _halt(self, error: str) -> None:
        log.error("rolling restart halted: %s; the processes after it were not restarted", error)
        self.status.state, self.status.error = "halted", error
        self.status.write(self.status_path)


def request(
    data_dir: Path, timeout_s: float, progress: Callable[[str], None] = lambda _: None
) -> RollStatus:
    """Ask the ``maas up`` of ``data_dir`` for a rolling restart and wait for its outcome,
    calling ``progress`` with each process that serves again.

    Raises ``RuntimeError`` naming the problem if no ``maas up`` runs there, a roll is
    already under way, or none ends within ``timeout_s``."""
    pid = _supervisor_pid(data_dir / PID_FILE)
    status_path = data_dir / STATUS_FILE
    before = RollStatus.read(status_path)
    if before is not None and before.state == "rolling":
        raise RuntimeError(f"a rolling restart is already under way ({status_path})")
    asked_at = time.time()
    os.kill(pid, ROLL_SIGNAL)
    give_up = time.monotonic() + timeout_s
    told = 0
    while time.monotonic() < give_up:
        status = RollStatus.read(status_path)
        if status is not None and status.started_at >= asked_at:
            for label in status.restarted[told:]:
                progress(label)
            told = len(status.restarted)
            if status.state != "rolling":
                return status
        time.sleep(0.2)
    raise RuntimeError(f"no rolling restart ended within {timeout_s:.0f} s; see maas up's log")


def _supervisor_pid(pid_file: Path) -> int:
    try:
        pid = int(pid_file.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        raise RuntimeError(f"maas up is not running here (no pid in {pid_file})") from None
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        raise RuntimeError(f"maas up is not running here ({pid_file} names pid {pid})") from None
    if b"up" not in command:  # a stale file, its pid since given to another process
        raise RuntimeError(f"maas up is not running here ({pid_file} names pid {pid})")
    return pid
