"""The nemesis: a fault schedule, deterministic from a seed, and the threads that carry it
out while the workload runs.

Faults (``Fault.kind``):

- ``processor_kill``: kill -9 a processor instance at a random moment;
- ``fault_point``: kill -9 at a commit boundary: the instance is restarted once with
  ``MAAS_FAULT_POINT=<point>:KILL`` (``processors/ledger/faults.py``) and kills itself
  there; the supervisor restarts it without. The ``+refund`` points fire only in a
  transaction that refunds expired deadlines, so for those the standard generator pools
  are paused (SIGSTOP) until a deadline passes with no meme;
- ``processor_pause``: SIGSTOP an instance past the session timeout (6 s) and the
  transaction timeout, then SIGCONT: a zombie that must be fenced;
- ``processor_wedge``: the instance is restarted once with
  ``MAAS_FAULT_POINT=after_produce:WEDGE``: its main thread blocks for good inside its
  first transaction while librdkafka's threads keep its session alive. The others must
  take its partitions, and its watchdog must end it (exit 70) once it has stalled for
  ``processor_stall_limit_ms`` (``processors/watchdog.py``); the fault fails otherwise.
  It is never a required fault (the scenario ``wedged-in-transaction`` of
  ``tests/scenarios/test_paused_processor.py`` has one in every suite): only a long run
  whose seed picks it has one;
- ``generator_kill``: kill -9 a generator pool;
- ``generator_pause``: SIGSTOP a generator pool past its session timeout, then SIGCONT:
  another pool of its kind (if there is one; else its requests expire and are refunded)
  takes its work and makes the memes again, while the paused one resumes with renders
  under way and outcomes to send, late;
- ``api_kill``: kill -9 an API process with calls in flight: their clients see the
  connection drop and retry (with their ``Idempotency-Key``, where they have one) on
  another API process or the restarted one;
- ``api_pause``: SIGSTOP an API process and leave it stopped: its supervisor must notice
  the silent heartbeat and kill it (``core/heartbeat.py``), or its share of the port's
  new connections would never be answered; the fault fails if that takes longer than
  the watchdog's limit and ``API_PAUSE_SLACK_S``;
- ``api_stall``: SIGSTOP an API process for ``API_STALL_S``, less than the watchdog's
  limit, then SIGCONT (a long pause of its own, such as a swapped-out process): it must
  not be killed, and its calls resume, their deadlines passed meanwhile racing the
  replies that arrived;
- ``graceful_restart``: a deploy's replacement of one process (a processor, a generator
  pool or an API, by seed), as ``maas restart`` makes it: the replacement starts beside
  it and waits; once it is warm the old one gets SIGTERM and stops gracefully with work
  under way (a transaction ended, renders finished and their outcomes sent, calls
  answered), and the replacement takes over (its transactional id, its membership);
- ``broker_kill``: kill -9 the broker leading most partitions of ``<region>.requests``,
  start it again a few seconds later;
- ``broker_pause``: SIGSTOP that broker past ``broker.session.timeout.ms`` (4 s), SIGCONT;
- ``broker_restart``: a clean restart (SIGTERM, start) of a broker.

Faults mode runs two lanes side by side (``LANES``), each one fault at a time: the ledger
processors' and the generator pools', and the APIs' and the brokers', so a broker or an
API can fail while a processor is down. Every kind happens at least once (but
``EXTRA_ONLY``; ``graceful_restart`` once in each lane), then more while time remains.
Availability mode kills a processor instance every X s (alternating) and a standard
generator pool every Y s (alternating), nothing else.

The plan is printed at the start; each fault is printed with its time as it happens.
Process faults that kill an instance are kept (``kills``) with the partitions it owned,
for the recovery times.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from core.settings import Settings
from processors.generators.worker import SESSION_TIMEOUT_MS as GENERATOR_SESSION_TIMEOUT_MS
from processors.ledger.processor import SESSION_TIMEOUT_MS
from processors.watchdog import WATCHDOG_EXIT_CODE
from tests.jepsen.brokers import Brokers, node_of
from tests.jepsen.region import (
    API_WATCHDOG_S,
    Region,
    api_names,
    generator_names,
    owned_by_log,
)

Mode = Literal["faults", "availability"]

FAULT_POINTS = (
    "after_produce",
    "after_commit",
    "after_offsets",
    "after_produce+refund",
    "after_offsets+refund",
    "after_commit+refund",
)
# Faults mode's two lanes: the ledger's processes, and the edge's (the APIs) with the
# brokers. A process is the target of one lane only, so two faults never meet on one (a
# pause while it is being replaced); the lanes take about as long as each other.
LEDGER_KINDS = (
    "processor_kill",
    "fault_point",
    "processor_pause",
    "processor_wedge",
    "generator_kill",
    "generator_pause",
    "graceful_restart",
)
EDGE_KINDS = ("api_kill", "api_pause", "api_stall", "graceful_restart")
BROKER_KINDS = ("broker_kill", "broker_pause", "broker_restart")
LANES = (LEDGER_KINDS, (*EDGE_KINDS, *BROKER_KINDS))
PROCESS_KINDS = tuple(dict.fromkeys((*LEDGER_KINDS, *EDGE_KINDS)))  # each kind once
# Planned only where time remains after the required faults (see processor_wedge above).
EXTRA_ONLY = ("processor_wedge",)
# What a fault takes, planned: the schedule's times come from these.
ESTIMATED_S = {
    "processor_kill": 2.0,
    "fault_point": 5.0,
    "fault_point+refund": 12.0,
    "processor_pause": 15.0,
    "processor_wedge": 5.0 + Settings().processor_stall_limit_ms / 1000 + 2.0,
    "generator_kill": 2.0,
    "generator_pause": 10.0,
    "api_kill": 2.0,
    "api_pause": API_WATCHDOG_S + 2.0,
    "api_stall": API_WATCHDOG_S - 2.0,
    "graceful_restart": 5.0,
    "broker_kill": 10.0,
    "broker_pause": 7.0,
    "broker_restart": 10.0,
}
SESSION_TIMEOUT_S = SESSION_TIMEOUT_MS / 1000  # the ledger processor's session
# Past a generator pool's session, so that its partitions go to another pool.
GENERATOR_PAUSE_S = GENERATOR_SESSION_TIMEOUT_MS / 1000 + 3
# Past the watchdog's limit, what its supervisor may take to notice a stopped API.
API_PAUSE_SLACK_S = 3.0
# Under the watchdog's limit by its last beat (up to 1 s before the stop) and 2 s more
# for a busy machine to run the resumed loop.
API_STALL_S = API_WATCHDOG_S - 3.0
BROKER_SESSION_TIMEOUT_S = 4.0  # broker.session.timeout.ms of the local brokers
BROKER_DOWN_S = 4.0
FAULT_POINT_FIRE_TIMEOUT_S = 25.0
FAULT_POINT_ATTEMPTS = 2
REFUND_FIRE_TIMEOUT_S = 20.0
WEDGED = "the main thread wedges here"  # processors/ledger/faults.py, at the fault point
WEDGE_SLACK_S = 5.0  # past the stall limit: the watchdog looks once a second, then a restart
GAP_S = (1.5, 4.0)


@dataclass(frozen=True)
class Fault:
    at_s: float  # planned start, seconds after the load starts
    kind: str
    target: str = ""  # a child's or a node's name; "" for the leader of most partitions
    point: str = ""  # for fault_point
    required: bool = False  # the load goes on until it has happened (see Nemesis.pending)

    def describe(self) -> str:
        what = f"{self.kind} {self.target} {self.point}".rstrip()
        return f"+{self.at_s:5.1f}s {what}"

    @property
    def estimate_s(self) -> float:
        if self.kind == "fault_point" and self.point.endswith("+refund"):
            return ESTIMATED_S["fault_point+refund"]
        return ESTIMATED_S[self.kind]


@dataclass
class Done:
    """A fault as it happened."""

    fault: Fault
    started_s: float
    ended_s: float
    note: str
    error: str | None = None


WEDGED_HOW = "wedged"  # ProcessorKill.how of a wedge: held for the stall limit, not killed


@dataclass
class ProcessorKill:
    """An instance killed (by us or by its fault point) or wedged, for the recovery time."""

    name: str
    at_ms: int
    partitions: set[int]
    how: str


@dataclass
class Plan:
    seed: int
    mode: Mode
    seconds: float  # the load's planned length
    lanes: list[list[Fault]]

    def describe(self) -> str:
        lines = [f"nemesis seed={self.seed} mode={self.mode}"]
        for n, lane in enumerate(self.lanes):
            lines.append(f"  lane {n}:")
            lines += [f"    {fault.describe()}" for fault in lane]
        return "\n".join(lines)


def plan_faults(
    seed: int,
    seconds: float,
    mode: Mode,
    processors: int,
    nodes: int = 1,
    kill_every_s: float = 10.0,
    generator_kill_every_s: float = 15.0,
    generators_standard: int = 1,
    generators_ai: int = 1,
    apis: int = 1,
) -> Plan:
    rng = random.Random(seed)
    instances = [f"processor-{i}" for i in range(processors)]
    generators = generator_names("standard", generators_standard)
    if mode == "availability":
        lane: list[Fault] = []
        first = rng.randrange(processors)
        for k in range(1, int(seconds / kill_every_s) + 1):
            target = instances[(first + k - 1) % processors]
            lane.append(Fault(k * kill_every_s, "processor_kill", target))
        for k in range(1, int(seconds / generator_kill_every_s) + 1):
            target = generators[(k - 1) % len(generators)]
            lane.append(Fault(k * generator_kill_every_s, "generator_kill", target))
        lane = [f for f in lane if f.at_s < seconds]
        return Plan(seed, mode, seconds, [sorted(lane, key=lambda f: f.at_s)])

    # Faults mode: the two fault points every run covers, then the others by seed.
    points = list(FAULT_POINTS[2:])
    rng.shuffle(points)
    points = ["after_produce", "after_commit", *points]
    ledger: list[tuple[str, str]] = [
        ("fault_point", points.pop(0)),
        ("fault_point", points.pop(0)),
        *((kind, "") for kind in LANES[0] if kind not in ("fault_point", *EXTRA_ONLY)),
    ]
    edge = [(kind, "") for kind in LANES[1]]
    rng.shuffle(ledger)
    rng.shuffle(edge)

    def extras(kinds: tuple[str, ...]) -> list[tuple[str, str]]:
        more = []
        for _ in range(50):
            kind = rng.choice(kinds)
            point = points.pop(0) if kind == "fault_point" and points else ""
            if kind == "fault_point" and not point:
                point = rng.choice(FAULT_POINTS)
            more.append((kind, point))
        return more

    lanes = []
    for n, (required, kinds) in enumerate(((ledger, LANES[0]), (edge, LANES[1]))):
        lane = []
        at_s = rng.uniform(3.0, 6.0)
        for k, (kind, point) in enumerate(required + extras(kinds)):
            target = ""
            if kind in ("processor_kill", "fault_point", "processor_pause", "processor_wedge"):
                target = rng.choice(instances)
            elif kind in ("generator_kill", "generator_pause"):
                target = rng.choice([*generators, *generator_names("ai", generators_ai)])
            elif kind in ("api_kill", "api_pause", "api_stall"):
                target = rng.choice(api_names(apis))
            elif kind == "graceful_restart" and n == 0:
                ai = generator_names("ai", generators_ai)
                target = rng.choice([*instances, *generators, *ai])
            elif kind == "graceful_restart":
                target = rng.choice(api_names(apis))
            elif kind == "broker_restart":
                target = f"node-{rng.randint(1, nodes)}"
            fault = Fault(round(at_s, 1), kind, target, point, required=k < len(required))
            # Every required fault is planned; an extra only if it ends before the load.
            if not fault.required and at_s + fault.estimate_s > seconds - 5:
                break
            lane.append(fault)
            at_s += fault.estimate_s + rng.uniform(*GAP_S)
        lanes.append(lane)
    return Plan(seed, mode, seconds, lanes)


@dataclass
class Nemesis:
    plan: Plan
    region: Region
    cluster: Brokers | None  # None: the cluster is not ours, no broker fault
    say: Callable[[str], None] = print
    done: list[Done] = field(default_factory=list)
    kills: list[ProcessorKill] = field(default_factory=list)
    zombie_marks: list[tuple[str, int]] = field(default_factory=list)  # (child, log offset)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._t0 = time.monotonic()

    # --- life cycle ------------------------------------------------------------------

    def start(self, t0: float) -> None:
        """``t0``: the load's start (monotonic), the origin of the plan's times."""
        self._t0 = t0
        for n, lane in enumerate(self.plan.lanes):
            thread = threading.Thread(target=self._run_lane, args=(lane,), name=f"nemesis-{n}")
            thread.start()
            self._threads.append(thread)

    def request_stop(self) -> None:
        """No new fault from now on; returns at once."""
        self._stop.set()

    def stop(self) -> None:
        """No new fault; the ones under way finish (a paused process is resumed, a killed
        broker started again) before this returns."""
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def pending(self) -> bool:
        """A required fault has not happened yet (it may be under way): the load that
        was planned for it must go on, however slowly the cluster restarts."""
        with self._lock:
            happened = {id(d.fault) for d in self.done}
        return any(f.required and id(f) not in happened for lane in self.plan.lanes for f in lane)

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(d.fault.kind for d in self.done)

    def skipped(self) -> list[Fault]:
        with self._lock:
            happened = {id(d.fault) for d in self.done}
        return [f for lane in self.plan.lanes for f in lane if id(f) not in happened]

    # --- lanes -------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return time.monotonic() - self._t0

    def _run_lane(self, lane: list[Fault]) -> None:
        for fault in lane:
            wait_s = fault.at_s - self._elapsed()
            if self._stop.wait(max(0.0, wait_s)):
                return
            if not fault.required and self._elapsed() + fault.estimate_s > self.plan.seconds:
                # Behind its schedule (a slow restart): the extras left would run past the
                # load's end, with no load to judge them by, and hold up the run's end.
                return
            started = self._elapsed()
            self.say(f"fault {fault.kind} {fault.target} {fault.point}".rstrip() + " begins")
            note, error = "", None
            try:
                note = self._carry_out(fault)
            except Exception as exc:  # reported with the result; the run goes on
                error = f"{type(exc).__name__}: {exc}"
            ended = self._elapsed()
            with self._lock:
                self.done.append(Done(fault, started, ended, note, error))
            self.say(
                f"fault {fault.kind} ends after {ended - started:.1f}s: {note}"
                + (f" ERROR {error}" if error else "")
            )

    def _carry_out(self, fault: Fault) -> str:
        if fault.kind in PROCESS_KINDS and fault.kind != "fault_point":
            # A lane behind its schedule runs faults back to back: the target of this one
            # may still be restarting after the last.
            self.region.wait_running(fault.target)
        match fault.kind:
            case "processor_kill":
                return self._processor_kill(fault.target)
            case "fault_point":
                return self._fault_point(fault.target, fault.point)
            case "processor_pause":
                return self._processor_pause(fault.target)
            case "processor_wedge":
                return self._processor_wedge(fault.target)
            case "generator_kill" | "api_kill":
                pid = self.region.kill(fault.target)
                return f"killed pid={pid}"
            case "generator_pause":
                pid = self.region.pid(fault.target)
                self.region.pause(fault.target)
                time.sleep(GENERATOR_PAUSE_S)
                self.region.resume(fault.target)
                return f"pid={pid} stopped {GENERATOR_PAUSE_S:.0f}s, resumed"
            case "api_pause":
                return self._api_pause(fault.target)
            case "api_stall":
                return self._api_stall(fault.target)
            case "graceful_restart":
                old, code, new = self.region.replace(fault.target)
                return f"pid={new} took over from pid={old} (stopped, code={code})"
            case "broker_kill" | "broker_pause" | "broker_restart":
                if self.cluster is None:
                    return "skipped: the cluster is not ours"
                return self._broker_fault(fault.kind, fault.target, self.cluster)
        raise ValueError(fault.kind)

    # --- process faults ----------------------------------------------------------------

    def _processor_kill(self, name: str) -> str:
        partitions = self._owned(name)
        at_ms = int(time.time() * 1000)
        pid = self.region.kill(name)
        self._kept(ProcessorKill(name, at_ms, partitions, "kill -9"))
        return f"killed pid={pid} partitions={sorted(partitions)}"

    def _fault_point(self, name: str, point: str) -> str:
        """Arm the point; if the instance did not reach it (a broker fault in the other
        lane can stall or end it first), arm it once more, so that every run crosses the
        boundary it planned."""
        notes: list[str] = []
        for _ in range(FAULT_POINT_ATTEMPTS):
            note = self._arm_fault_point(name, point)
            if note.startswith("fired"):
                return note if not notes else f"{note} (after: {'; '.join(notes)})"
            notes.append(note)
        return "; ".join(notes)

    def _arm_fault_point(self, name: str, point: str) -> str:
        refund = point.endswith("+refund")
        before = self._owned(name)
        popen = self.region.restart_with(name, {"MAAS_FAULT_POINT": f"{point}:KILL"})
        if refund:
            # No meme, so deadlines expire and a refund transaction comes.
            for generator in self.region.standard_generator_names:
                self.region.pause(generator)
        try:
            code = popen.wait(REFUND_FIRE_TIMEOUT_S if refund else FAULT_POINT_FIRE_TIMEOUT_S)
        except Exception:  # subprocess.TimeoutExpired: it never reached its point
            code = None
        finally:
            if refund:
                for generator in self.region.standard_generator_names:
                    self.region.resume(generator)
        if code is None:
            self.region.restart_with(name, {})  # without the fault: the next one is clean
            return f"did not fire within the bound; {name} restarted without it"
        if code != -signal.SIGKILL:
            # It exited by itself before reaching its point; the supervisor restarts it
            # without the fault.
            return f"did not fire: {name} exited first with code {code}"
        at_ms = int(time.time() * 1000)
        partitions = self._owned(name) or before
        self._kept(ProcessorKill(name, at_ms, partitions, f"fault point {point}"))
        return f"fired: exit code {code} partitions={sorted(partitions)}"

    def _processor_pause(self, name: str) -> str:
        # Past the session timeout (a rebalance gives its partitions away) and the
        # transaction timeout (the broker aborts what it had open).
        pause_s = max(SESSION_TIMEOUT_S, self.region.settings.transaction_timeout_ms / 1000) + 4
        pid = self.region.pid(name)
        self.region.pause(name)
        time.sleep(pause_s)
        offset = self.region.children[name].log_path.stat().st_size
        self.region.resume(name)
        self.zombie_marks.append((name, offset))
        return f"pid={pid} stopped {pause_s:.0f}s, resumed"

    def _processor_wedge(self, name: str) -> str:
        """Kept as a kill from the moment it wedged, with the partitions it held then:
        its recovery is how long until they are decided again (the stall limit, then
        the restart, the same static member)."""
        limit_s = self.region.settings.processor_stall_limit_ms / 1000
        log_path = self.region.children[name].log_path
        offset = log_path.stat().st_size if log_path.exists() else 0

        def said() -> str:
            with log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")

        started = time.monotonic()
        popen = self.region.restart_with(name, {"MAAS_FAULT_POINT": "after_produce:WEDGE"})
        wedged_at_ms: int | None = None
        while popen.poll() is None:
            if time.monotonic() - started > FAULT_POINT_FIRE_TIMEOUT_S + limit_s + WEDGE_SLACK_S:
                self.region.restart_with(name, {})  # without the fault
                raise RuntimeError(
                    f"{name} still running {time.monotonic() - started:.0f}s after it was "
                    f"armed (stall limit {limit_s:.0f}s): wedged and not ended"
                )
            if wedged_at_ms is None and WEDGED in said():
                wedged_at_ms = int(time.time() * 1000)
            time.sleep(0.1)
        code, log = popen.returncode, said()
        if WEDGED not in log:
            # A broker fault of the other lane ended it before its first transaction.
            return f"did not wedge: {name} exited first with code {code}"
        if code != WATCHDOG_EXIT_CODE or "main loop stalled" not in log:
            raise RuntimeError(f"{name} wedged, then exited with code {code}, not its watchdog")
        partitions = owned_by_log(log[: log.index(WEDGED)])
        if wedged_at_ms is not None:  # else it wedged and ended between two looks: untimed
            self._kept(ProcessorKill(name, wedged_at_ms, partitions, WEDGED_HOW))
        return (
            f"wedged; ended by its watchdog {time.monotonic() - started:.1f}s after the "
            f"restart (stall limit {limit_s:.0f}s) partitions={sorted(partitions)}"
        )

    def _api_pause(self, name: str) -> str:
        pid = self.region.pid(name)
        self.region.pause(name)
        started = time.monotonic()
        bound_s = self.region.settings.api_watchdog_s + API_PAUSE_SLACK_S
        while self.region.pid(name) == pid and time.monotonic() - started < bound_s:
            time.sleep(0.1)
        waited_s = time.monotonic() - started
        if self.region.pid(name) == pid:
            self.region.resume(name)
            raise RuntimeError(f"pid={pid} still stopped after {waited_s:.1f}s: not killed")
        return f"pid={pid} stopped; killed by its supervisor after {waited_s:.1f}s"

    def _api_stall(self, name: str) -> str:
        pid = self.region.pid(name)
        self.region.pause(name)
        time.sleep(API_STALL_S)
        self.region.resume(name)
        if self.region.pid(name) != pid:
            raise RuntimeError(f"pid={pid} killed while stopped {API_STALL_S:.0f}s")
        return f"pid={pid} stopped {API_STALL_S:.0f}s, resumed"

    def _owned(self, name: str) -> set[int]:
        """The group coordinator's word; when it has none (it did not answer during a
        broker fault, or lists no assignment in a rebalance) the instance's own log says
        what it last owned."""
        instance = self.region.children[name].instance_id or ""
        owned = (self.region.owned_partitions() or {}).get(instance)
        return owned or self.region.logged_partitions(name)

    def _kept(self, kill: ProcessorKill) -> None:
        with self._lock:
            self.kills.append(kill)

    # --- broker faults -----------------------------------------------------------------

    def _broker_fault(self, kind: str, target: str, cluster: Brokers) -> str:
        if kind == "broker_restart":
            node = int(target.removeprefix("node-"))
            node_of(cluster, node).stop()
            cluster.restart(node)
            return f"node {node} stopped cleanly and started again"
        node, led = self._busiest_leader(cluster)
        if kind == "broker_kill":
            cluster.kill(node)
            time.sleep(BROKER_DOWN_S)
            cluster.restart(node)
            down = f"{BROKER_DOWN_S:.0f}s"
            return f"node {node} (leader of {led} partitions) killed, started {down} later"
        pause_s = BROKER_SESSION_TIMEOUT_S + 2
        cluster.pause(node)
        time.sleep(pause_s)
        cluster.resume(node)
        return f"node {node} (leader of {led} partitions) stopped {pause_s:.0f}s, resumed"

    def _busiest_leader(self, cluster: Brokers) -> tuple[int, int]:
        leaders = Counter(cluster.leaders(self.region.topics.requests).values())
        leaders.pop(-1, None)
        if not leaders:
            return 1, 0
        node, led = max(leaders.items(), key=lambda item: (item[1], -item[0]))
        return node, led
