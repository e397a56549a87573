"""A whole region as real processes on a given cluster, for the Jepsen-style run.

A fresh region name (``j<8 hex>``), data dir and development secrets, as
``tests/stack.py`` makes them; the processes are started through
``maas.processes.start_process`` like ``maas up`` starts them: K ledger processor
instances (``instance_id`` "0".."K-1", children ``processor-0``...), G standard
generator pools (``generator-standard-0``..., or ``generator-standard`` if one), as many
AI pools (``generator-ai-0``..., or ``generator-ai``) and one API (or N on one port,
``api-0``...), each appending to its own log in ``<root>/logs``.

A supervisor thread restarts any child that exits, at once, backing off only for a crash
loop (``maas.supervisor.restart_delay_s``, the rule ``maas up`` follows), except while the
nemesis holds the child (``hold``). A stopped child (SIGSTOP) has not exited, so it is
left alone until it is resumed; an API is the exception, as under ``maas up``: its
heartbeat falls silent, and after ``API_WATCHDOG_S`` the supervisor kills it
(``core/heartbeat.py``; shorter than ``maas up``'s default, for a shorter fault). A
child can be started once with extra environment variables (``restart_with``, e.g.
``MAAS_FAULT_POINT``): the next start, after it exits, is without them.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from core.admin import ensure_topics
from core.heartbeat import HeartbeatWatch, kill_silent
from core.readiness import forget, is_warm
from core.settings import Settings
from core.topics import Topics
from maas.broker import free_port
from maas.processes import heartbeat_file, process_label, reap, start_process
from maas.supervisor import restart_delay_s
from processors.ledger.processor import group_id
from tests.jepsen.admin import owned_partitions

STARTUP_TIMEOUT_S = 180.0
SUPERVISE_POLL_S = 0.1
API_WATCHDOG_S = 5.0
KILLED_EXIT_TIMEOUT_S = 10.0
# The generators fail any query containing this text: the 502 / refund path.
GENERATOR_FAULT_QUERY = "genfail"
# A ledger processor's log lines that change what it owns (processors/ledger/processor.py).
OWNERSHIP_LINE = re.compile(
    r"ledger processor started|partitions (assigned|revoked) partitions=\[([0-9, ]*)\]"
)


def owned_by_log(text: str) -> set[int]:
    """The partitions a processor's log says it owns at its end."""
    owned: set[int] = set()
    for match in OWNERSHIP_LINE.finditer(text):
        if match.group(1) == "assigned":
            owned = {int(p) for p in match.group(2).split(",") if p.strip()}
        else:
            owned = set()
    return owned


Say = Callable[[str], None]


def api_names(count: int) -> list[str]:
    """The children that are API processes: ``api`` if one, else ``api-0``..."""
    return [process_label("api", str(i) if count > 1 else None) for i in range(count)]


def generator_names(kind: str, count: int) -> list[str]:
    """The children that are generator pools of ``kind``: one keeps the plain name (as one
    API does here), several are numbered like ``maas up``'s instances."""
    return [process_label(f"generator-{kind}", str(i) if count > 1 else None) for i in range(count)]


@dataclass
class Exit:
    """A child's exit as the supervisor saw it (``at_ms``: epoch ms, within 100 ms)."""

    name: str
    at_ms: int
    code: int | None


@dataclass
class Child:
    name: str  # "processor-0", "generator-standard-0", "generator-ai", "api" (or "api-0"...)
    process: str  # the name ``start_process`` knows
    log_path: Path
    instance_id: str | None = None
    popen: subprocess.Popen[bytes] | None = None
    held: bool = False
    started_at: float = 0.0
    quick_exits: int = 0
    restart_at: float | None = None
    starts: int = 0
    watch: HeartbeatWatch | None = None

    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None and self.popen.poll() is None else None


@dataclass
class Region:
    """One region on ``bootstrap``; ``start()`` brings it up, ``stop()`` takes it down."""

    bootstrap: str
    root: Path
    processors: int = 2
    generators_standard: int = 2
    generators_ai: int = 2
    apis: int = 1
    replication_factor: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    say: Say = print
    name: str = field(default_factory=lambda: "j" + uuid.uuid4().hex[:8])
    exits: list[Exit] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.log_dir = self.root / "logs"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.billing_token = secrets.token_urlsafe(24)
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "MAAS_REGION": self.name,
            "MAAS_DATA_DIR": str(self.root / "data"),
            "MAAS_REPLICATION_FACTOR": str(self.replication_factor),
            "MAAS_BILLING_TOKEN": self.billing_token,
            "MAAS_AUDITOR_TOKEN": f"auditor-{self.billing_token}",
            "MAAS_AUDIT_SIGNING_KEY": f"signing-{self.billing_token}",
            "MAAS_FAULT_INJECTION_QUERY": GENERATOR_FAULT_QUERY,
            "MAAS_API_WATCHDOG_S": str(API_WATCHDOG_S),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        # A fault point is given to one start only, never inherited by the region.
        self.env.pop("MAAS_FAULT_POINT", None)
        self.settings = Settings.from_env(self.env)
        self.topics = Topics(self.name)
        self.children: dict[str, Child] = {}
        for i in range(self.processors):
            self._add(f"processor-{i}", "processor", str(i))
        for i, name in enumerate(self.standard_generator_names):
            self._add(name, "generator-standard", str(i))
        for i, name in enumerate(generator_names("ai", self.generators_ai)):
            self._add(name, "generator-ai", str(i))
        for i, name in enumerate(api_names(self.apis)):
            # On one port (SO_REUSEPORT), each with its own reply partition.
            self._add(name, "api", str(i) if self.apis > 1 else None)
        self._lock = threading.RLock()  # children's processes: supervisor vs nemesis
        self._stop = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)

    def _add(self, name: str, process: str, instance_id: str | None = None) -> None:
        log_path = self.log_dir / f"{name}.log"
        self.children[name] = Child(name, process, log_path, instance_id)

    @property
    def processor_names(self) -> list[str]:
        return [f"processor-{i}" for i in range(self.processors)]

    @property
    def standard_generator_names(self) -> list[str]:
        return generator_names("standard", self.generators_standard)

    # --- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ensure_topics(self.settings)
        with self._lock:
            for child in self.children.values():
                self._start(child, {})
        self.wait_serving()
        self._supervisor.start()

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor.is_alive():
            self._supervisor.join(timeout=5)
        with self._lock:
            for child in reversed(list(self.children.values())):
                self._terminate(child)

    def wait_serving(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """The API is ready and every processor instance owns partitions: only then does
        a request get decided. Nothing is written to find out (no test client)."""
        deadline = time.monotonic() + timeout_s
        last = ""
        with httpx.Client(base_url=self.base_url, timeout=5) as http:
            while time.monotonic() < deadline:
                # Before the supervisor runs, nobody restarts a child that exits.
                for child in self.children.values():
                    exited = child.popen is not None and child.popen.poll() is not None
                    if exited and not self._supervisor.is_alive():
                        raise RuntimeError(f"{child.name} exited:\n{self.tail(child.name)}")
                try:
                    response = http.get("/readyz")
                    last = f"readyz={response.status_code}"
                    # The group is asked only then: each question is a child process.
                    if response.status_code == 200:
                        owned = self.owned_partitions() or {}
                        covered = sorted(p for parts in owned.values() for p in parts)
                        last += f" owned={owned}"
                        if len(owned) == self.processors and covered == list(
                            range(self.partitions)
                        ):
                            return
                except httpx.HTTPError as exc:
                    last = repr(exc)
                time.sleep(1.0)
        raise TimeoutError(f"region {self.name} not serving after {timeout_s} s: {last}")

    @property
    def partitions(self) -> int:
        return self.settings.partitions

    # --- faults the nemesis asks for ---------------------------------------------------

    def pid(self, name: str) -> int | None:
        return self.children[name].pid()

    def wait_running(self, name: str, timeout_s: float = 30.0) -> int:
        """The child's pid once it runs and, if its heartbeat is watched, has beaten: a
        fault aimed at a child the supervisor is still restarting would hit nothing (a
        dead pid), or stop an API still in its start grace, which no watch would kill."""
        child = self.children[name]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pid = child.pid()
            if pid is not None and (child.watch is None or child.watch.beat_at is not None):
                return pid
            time.sleep(0.1)
        raise TimeoutError(f"{name} not running after {timeout_s:.0f}s")

    def kill(self, name: str) -> int | None:
        """SIGKILL, as a crash; the supervisor restarts it unless held. Returns the pid
        once the process has exited: until the kernel has ended it, it still looks alive,
        and a fault aimed at it next would stop the dead pid instead of its restart."""
        with self._lock:
            popen = self.children[name].popen
            pid = self.children[name].pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        if pid is not None and popen is not None:
            popen.wait(KILLED_EXIT_TIMEOUT_S)
        return pid

    def replace(self, name: str, timeout_s: float = 60.0) -> tuple[int, int, int]:
        """A deploy's replacement of one process, as ``maas restart`` makes it
        (``maas/rolling.py``): the replacement starts beside it, told its pid; once the
        replacement is warm (an API: serves), the old one gets SIGTERM and stops
        gracefully, and the replacement takes over. Returns the old pid, its exit code and
        the new pid; a replacement that exits or never gets warm fails the fault."""
        ready = self.root / "ready" / name
        forget(ready)
        with self.hold(name) as child:
            old = child.popen
            assert old is not None
            env = {"MAAS_PREDECESSOR_PID": str(old.pid), "MAAS_READY_FILE": str(ready)}
            self._start(child, env)
            new = child.popen
            assert new is not None
            give_up = time.monotonic() + timeout_s
            while not is_warm(ready):
                if new.poll() is not None:
                    raise RuntimeError(f"{name}'s replacement exited with code {new.returncode}")
                if time.monotonic() > give_up:
                    raise TimeoutError(f"{name}'s replacement not warm after {timeout_s:.0f}s")
                time.sleep(0.05)
            old.terminate()
            code = old.wait(timeout_s)  # a graceful stop that hangs fails the fault
        return old.pid, code, self.wait_running(name, timeout_s)

    def pause(self, name: str) -> None:
        """SIGSTOP: the process neither runs nor exits, so the supervisor waits."""
        pid = self.children[name].pid()
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        child = self.children[name]
        if child.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.popen.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[Child]:
        """The supervisor leaves the child alone inside this block."""
        child = self.children[name]
        with self._lock:
            child.held = True
        try:
            yield child
        finally:
            with self._lock:
                child.held = False

    def restart_with(self, name: str, extra_env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Stop the child cleanly and start it once with ``extra_env``; when that process
        exits, the supervisor starts the child again with the region's own environment."""
        with self.hold(name) as child:
            self._terminate(child)
            self._start(child, extra_env)
            assert child.popen is not None
            return child.popen

    # --- what the group says -----------------------------------------------------------

    def owned_partitions(self) -> dict[str, set[int]] | None:
        """Which partitions of ``<region>.requests`` each processor instance owns now, by
        instance id, as the group coordinator has them (static members stay listed, with
        their assignment, until their session times out); None if it did not answer."""
        return owned_partitions(self.bootstrap, group_id(self.name), self.topics.requests)

    def logged_partitions(self, name: str) -> set[int]:
        """What processor ``name`` last said it owns, by its own log: the partitions of its
        last assignment, unless revoked or restarted since (with the eager range assignor
        each assignment and revocation is the whole set)."""
        path = self.children[name].log_path
        return owned_by_log(path.read_text(errors="replace") if path.exists() else "")

    # --- logs --------------------------------------------------------------------------

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.children[name].log_path
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def grep(self, needle: str) -> dict[str, list[str]]:
        """Lines containing ``needle`` in every child's log, for the report."""
        found: dict[str, list[str]] = {}
        for name, child in self.children.items():
            if child.log_path.exists():
                lines = [
                    line
                    for line in child.log_path.read_text(errors="replace").splitlines()
                    if needle in line
                ]
                if lines:
                    found[name] = lines
        return found

    # --- internals ---------------------------------------------------------------------

    def _start(self, child: Child, extra_env: dict[str, str]) -> None:
        heartbeat = heartbeat_file(self.settings.data_dir, child.process, child.instance_id)
        child.popen = start_process(
            child.process,
            {**self.env, **extra_env},
            child.log_path,
            port=self.port,
            instance_id=child.instance_id,
            heartbeat=heartbeat,
        )
        child.started_at = time.monotonic()
        if heartbeat is not None:
            limit_s = self.settings.api_watchdog_s
            child.watch = HeartbeatWatch.start(heartbeat, limit_s, child.started_at)
        child.starts += 1
        child.restart_at = None
        if child.starts > 1:
            note = " ".join(f"{k}={v}" for k, v in extra_env.items())
            self.say(f"started {child.name} pid={child.popen.pid} {note}".rstrip())

    def _terminate(self, child: Child, timeout_s: float = 15.0) -> None:
        popen = child.popen
        if popen is None or popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(popen.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        popen.terminate()
        reap(popen, timeout_s)

    def _supervise(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                for child in self.children.values():
                    if not child.held:
                        self._look_at(child, time.monotonic())
            self._stop.wait(SUPERVISE_POLL_S)

    def _look_at(self, child: Child, now: float) -> None:
        assert child.popen is not None
        if child.restart_at is None:
            code = child.popen.poll()
            if code is None:
                silent_s = child.watch.silent_s(now) if child.watch is not None else None
                if silent_s is not None:
                    self.say(f"supervisor: {child.name} silent {silent_s:.1f}s, killing it")
                    kill_silent(child.popen)
                return
            self.exits.append(Exit(child.name, int(time.time() * 1000), code))
            delay_s, child.quick_exits = restart_delay_s(now - child.started_at, child.quick_exits)
            child.restart_at = now + delay_s
            self.say(f"supervisor: {child.name} exited code={code} restart_in_s={delay_s:.1f}")
        if now >= child.restart_at:
            self._start(child, {})
