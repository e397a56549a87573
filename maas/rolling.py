"""A rolling restart of ``maas up``'s processes: a deploy without downtime.

``maas restart`` (or ``kill -USR2 <pid of maas up>``) asks the supervisor to replace
every child in turn, so that each runs the code now on disk. The ledger processors go
last (``ROLL_ORDER``): they write what the others read strictly (replies, approvals,
ledger entries), while the others write only inputs, which an older processor reads
whatever a newer writer adds (``docs/architecture.md``); so at every moment of a deploy
each reader is at least as new as what it reads. For each child:

1. its replacement starts while it still serves, told its pid (``MAAS_PREDECESSOR_PID``):
   it imports, loads and builds its clients, then says it is warm and waits for the
   predecessor to exit (``core/readiness.py``, ``take_over``); an API process instead
   listens beside it and says it serves;
2. the predecessor gets SIGTERM: its graceful stop (an API answers the calls it holds
   and leaves the port to the others, a processor ends between transactions, a pool
   finishes its renders); one still running after ``STOP_TIMEOUT_S`` is killed;
3. the replacement takes over (its transactional id, its static group membership: its
   predecessor's partitions, without a rebalance), and the next child waits until it
   serves: until it has touched its ready file.

So a processor's or a pool's partitions wait only for its predecessor's stop and its own
join, not for a whole start, and the instances of a kind are never down together. A
replacement that is not warm, or does not serve, within ``READY_TIMEOUT_S`` halts the
roll: one that never got warm is killed and its predecessor kept. The supervisor looks
after the replacement as after any child (a crashed one is started again, without a
predecessor to wait for; the roll then stops the old one at once). Progress goes to the
supervisor's log and to ``roll.json`` in the data dir (``RollStatus``), which
``maas restart`` waits on.
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

from core.readiness import is_warm

log = logging.getLogger("maas.up")

ROLL_SIGNAL = signal.SIGUSR2
ROLL_ORDER = (
    "api",
    "generator-standard",
    "generator-ai",
    "usage",
    "checkpointer",
    "sweeper",
    "processor",
)
STOP_TIMEOUT_S = 30.0  # an API's graceful stop waits for its calls (5 s deadlines)
READY_TIMEOUT_S = 120.0  # a restart on a saturated machine has taken tens of seconds
PID_FILE = "up.pid"
STATUS_FILE = "roll.json"

RollState = Literal["rolling", "done", "halted"]


class Rollable(Protocol):
    """What a roll needs of a supervised child (``maas.supervisor.Child``)."""

    name: str
    process: subprocess.Popen[bytes] | None
    ready_file: Path | None

    @property
    def label(self) -> str: ...
    def start(self, env: dict[str, str]) -> None: ...


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


Phase = Literal["warming", "stopping", "taking over"]


class Roll:
    """One rolling restart, advanced by the supervisor's loop (``step``) between its
    looks at the children, so that the others stay supervised meanwhile."""

    def __init__(
        self,
        children: Sequence[Rollable],
        status_path: Path,
        env: dict[str, str],
        *,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        self.children = children
        self.status_path = status_path
        self.env = env
        self.stop_timeout_s = stop_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.status = RollStatus("rolling", time.time())
        self._next = 0
        self._phase: Phase | None = None  # None: the next child's replacement to start
        self._old: subprocess.Popen[bytes] | None = None  # the predecessor
        self._new: subprocess.Popen[bytes] | None = None  # its replacement, as started
        self._began_at = 0.0
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
            if self._phase is None:
                self._replace(child, now)
            elif self._phase == "warming":
                if not self._warmed(child, now):
                    return
            elif self._phase == "stopping":
                if not self._stopped(child, now):
                    return
            elif _serves(child):
                self._served(child, now)
            elif now > self._deadline:
                self._halt(f"{child.label} did not serve within {self.ready_timeout_s:.0f} s")
            else:
                return

    def _replace(self, child: Rollable, now: float) -> None:
        old = child.process
        assert old is not None
        self._old, self._began_at = old, now
        self.status.current = child.label
        self.status.write(self.status_path)
        child.start({**self.env, "MAAS_PREDECESSOR_PID": str(old.pid)})
        self._new = child.process
        log.info(
            "rolling restart: replacing process=%s pid=%d",
            child.label,
            old.pid,
        )
        self._phase, self._deadline = "warming", now + self.ready_timeout_s

    def _warmed(self, child: Rollable, now: float) -> bool:
        """Whether the replacement waits only for its predecessor now (it said so, or it
        serves already, or it crashed and its restart waits for nobody)."""
        ready = child.ready_file
        warm = ready is not None and is_warm(ready)
        new = self._new
        crashed = new is None or new.poll() is not None or child.process is not new
        if not warm and not crashed:
            if now <= self._deadline:
                return False
            self._give_back(child)
            return False
        assert self._old is not None
        log.info(
            "rolling restart: process=%s warm after %.1f s; stopping pid=%d",
            child.label,
            now - self._began_at,
            self._old.pid,
        )
        self._old.terminate()
        self._phase, self._deadline = "stopping", now + self.stop_timeout_s
        return True

    def _stopped(self, child: Rollable, now: float) -> bool:
        assert self._old is not None
        if self._old.poll() is None:
            if now > self._deadline:
                log.warning(
                    "rolling restart: process=%s pid=%d did not stop within %.0f s; killing it",
                    child.label,
                    self._old.pid,
                    self.stop_timeout_s,
                )
                self._old.kill()
            return False
        self._stopped_at = now
        self._phase, self._deadline = "taking over", now + self.ready_timeout_s
        return True

    def _served(self, child: Rollable, now: float) -> None:
        log.info(
            "rolling restart: process=%s serves again %.1f s after its predecessor "
            "stopped (%.1f s in all)",
            child.label,
            now - self._stopped_at,
            now - self._began_at,
        )
        self.status.restarted.append(child.label)
        self._phase, self._old, self._new = None, None, None
        self._next += 1
        if self._next == len(self.children):
            self.status.state, self.status.current = "done", None
            log.info("rolling restart done processes=%d", len(self.children))
        self.status.write(self.status_path)

    def _give_back(self, child: Rollable) -> None:
        """A replacement never got warm: the predecessor stays, the replacement goes."""
        replacement = child.process
        child.process = self._old
        if replacement is not None:
            replacement.kill()
            replacement.wait()
        self._halt(f"{child.label}'s replacement was not warm within {self.ready_timeout_s:.0f} s")

    def _halt(self, error: str) -> None:
        log.error("rolling restart halted: %s; the processes after it were not restarted", error)
        self.status.state, self.status.error = "halted", error
        self.status.write(self.status_path)


def _serves(child: Rollable) -> bool:
    process = child.process
    return (
        child.ready_file is not None
        and child.ready_file.exists()
        and process is not None
        and process.poll() is None
    )


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
