"""A process's heartbeat, and a supervisor's watch on it (systemd's ``WatchdogSec=``).

API processes share one port (``SO_REUSEPORT``), and the kernel hands each listening
socket its share of new connections whether or not its process runs: a stopped or wedged
API (SIGSTOP, a blocked event loop) would swallow its share of the clients for as long as
it lives. So a supervisor names a file for the process to touch (``MAAS_HEARTBEAT_FILE``);
the process's event loop touches it every ``BEAT_INTERVAL_S`` (``beat``), and the
supervisor kills a process whose file has not changed within its limit
(``HeartbeatWatch``), then restarts it like any child that exits. The kernel resets the
connections queued on the dead socket, and their clients retry on the others.

The watch looks only for a change of the file's modification time and times the silence
with its own monotonic clock, so a step of the wall clock is never a missed beat.

Before the kill, the supervisor asks for the process's stacks (``kill_silent``): a
watched process writes every thread's stack to its log on ``STACKS_SIGNAL``
(``dump_stacks_on_signal``), from C, so also while a thread holds the interpreter. A
wedged event loop then says where it was stuck; a stopped process says nothing.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

BEAT_INTERVAL_S = 1.0
# Before its first beat a process imports, loads and connects; on a saturated machine
# that has taken tens of seconds, and killing it then would only start it over.
START_GRACE_S = 60.0
STACKS_SIGNAL = signal.SIGUSR1
STACKS_WAIT_S = 0.5  # for the stacks to be written before the kill


def dump_stacks_on_signal() -> None:
    """Write every thread's stack to stderr (the process's log) on ``STACKS_SIGNAL``."""
    faulthandler.register(STACKS_SIGNAL, all_threads=True)


def kill_silent(process: subprocess.Popen[bytes]) -> None:
    """Ask a silent process for its stacks, give it ``STACKS_WAIT_S``, then SIGKILL it."""
    process.send_signal(STACKS_SIGNAL)
    time.sleep(STACKS_WAIT_S)
    process.kill()


async def beat(path: Path, interval_s: float = BEAT_INTERVAL_S) -> None:
    """Touch ``path`` every ``interval_s`` while this event loop runs, until cancelled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        path.touch()
        await asyncio.sleep(interval_s)


@dataclass
class HeartbeatWatch:
    """A supervisor's view of one started process's heartbeat file."""

    path: Path
    limit_s: float  # longest silence allowed once the process has beaten
    started_at: float  # monotonic, when the process was started
    seen_mtime_ns: int | None = None
    beat_at: float | None = None  # monotonic, when a beat was last seen

    @classmethod
    def start(cls, path: Path, limit_s: float, now: float) -> HeartbeatWatch:
        """Watch a process started ``now``; a file left by an earlier process is no beat."""
        return cls(path, limit_s, now, seen_mtime_ns=_mtime_ns(path))

    def silent_s(self, now: float) -> float | None:
        """How long the process has been silent, once that exceeds its allowance
        (``START_GRACE_S`` before a first beat, ``limit_s`` after); None while it beats."""
        mtime_ns = _mtime_ns(self.path)
        if mtime_ns is not None and mtime_ns != self.seen_mtime_ns:
            self.seen_mtime_ns, self.beat_at = mtime_ns, now
        if self.beat_at is None:
            silent, allowed = now - self.started_at, START_GRACE_S
        else:
            silent, allowed = now - self.beat_at, self.limit_s
        return silent if silent > allowed else None


def _mtime_ns(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None
