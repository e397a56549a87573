"""CPU of each process of the run while the load runs, from ``/proc``, in shares of one
core, and the machine's busy share.

Processes are named, and their pids asked for again at every sample (``pids()``): a
killed processor comes back with a new pid, and its CPU is the sum over its pids. A
pid's CPU is ``utime + stime`` of ``/proc/<pid>/stat`` (every thread), counted from its
first sample, or from 0 if it first appears after the meter started (it was born during
the load). What a process used between its last sample and its death is lost: at most
one ``SAMPLE_EVERY_S``. Processes are found by pid, never by command line (a broker's is
a classpath of a few kilobytes).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

SAMPLE_EVERY_S = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

Pids = Callable[[], dict[str, int | None]]


def process_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` in clock ticks; None if it is gone (a zombie still has
    them, until it is reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces: fields count after its end.
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of every core since boot; idle and iowait are not busy."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    total = sum(ticks)
    return total - ticks[3] - ticks[4], total


@dataclass
class CpuReport:
    seconds: float
    core_share: dict[str, float]  # process name -> CPU seconds per second (1.0: one core)
    machine_busy_share: float  # of all cores, whoever used them
    cores: int

    @property
    def ours_share(self) -> float:
        """The named processes' part of all cores; ``machine_busy_share`` minus this is
        what others used (other work on a shared machine, possibly in other containers,
        whose processes are not visible here)."""
        return round(sum(self.core_share.values()) / self.cores, 3)

    def line(self) -> str:
        shares = " ".join(f"{name}={share:.2f}" for name, share in self.core_share.items())
        return (
            f"cpu over {self.seconds:.0f}s, shares of one core: {shares}; machine busy "
            f"{self.machine_busy_share:.1%} of {self.cores} cores, the run's processes "
            f"{self.ours_share:.1%}"
        )


class CpuMeter:
    """``start()``, then ``stop()`` returns the ``CpuReport``; a thread samples between.

    ``sample()`` may be called at any moment, e.g. on a child that has exited but is not
    reaped yet, so that its last ticks count."""

    def __init__(self, pids: Pids, every_s: float = SAMPLE_EVERY_S) -> None:
        self._pids = pids
        self._every_s = every_s
        self._lock = threading.Lock()
        self._first: dict[tuple[str, int], int] = {}
        self._last: dict[tuple[str, int], int] = {}
        self._names: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)
        self._started = False

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._machine0 = machine_ticks()
        self.sample()
        self._started = True
        self._thread.start()

    def sample(self) -> None:
        pids = self._pids()
        with self._lock:
            for name, pid in pids.items():
                if name not in self._names:
                    self._names.append(name)
                if pid is None:
                    continue
                ticks = process_ticks(pid)
                if ticks is None:
                    continue
                key = (name, pid)
                if key not in self._first:
                    self._first[key] = ticks if not self._started else 0
                self._last[key] = ticks

    def stop(self) -> CpuReport:
        """The last sample, and the report from ``start()`` to now."""
        self.sample()
        self._stop.set()
        self._thread.join()
        return self.report()

    def report(self) -> CpuReport:
        """From ``start()`` to the latest sample (a sample a second while running)."""
        seconds = max(1e-9, time.monotonic() - self._t0)
        busy1, total1 = machine_ticks()
        busy0, total0 = self._machine0
        with self._lock:
            used: dict[str, int] = dict.fromkeys(self._names, 0)
            for (name, pid), last in self._last.items():
                used[name] += last - self._first[(name, pid)]
        return CpuReport(
            seconds=seconds,
            core_share={name: round(t / CLK_TCK / seconds, 3) for name, t in used.items()},
            machine_busy_share=round((busy1 - busy0) / max(1, total1 - total0), 3),
            cores=os.cpu_count() or 1,
        )

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            self.sample()
