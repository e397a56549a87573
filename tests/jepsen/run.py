"""``python -m tests.jepsen.run``: the workload and the nemesis together, then the checker.

    python -m tests.jepsen.run [--seconds 60] [--rate 30] [--nodes 3] [--processors 2]
        [--generators-standard 2] [--api 2]
        [--clients 40] [--seed S] [--mode faults|availability] [--load vegeta|python]
        [--memes new|repeated] [--keep DIR]

Steps: start the cluster (or use ``$KAFKA_BOOTSTRAP_SERVERS``) and a fresh region; set up
the clients; run the load and the fault schedule together for ``--seconds``; stop the
faults (what is down comes back); let everything settle (every request the service
named reaches a final outcome, within a bound); record one ``GET /v1/me`` per client;
then ``check()`` the history against the ledger and print the fault schedule, the
statuses, the verdict, the availability (meme requests answered 2xx within the
deadline, first attempts, from the scheduled instant), the recovery time of each
processor kill, and the CPU each process used during the load.

The load: in availability mode vegeta (``tests/jepsen/vegeta.py``) when
``.maas/bin/vegeta`` exists, a compiled open-loop generator that leaves the CPU to the
service it measures; otherwise, and always in faults mode (it retries), the Python load
(``tests/jepsen/workload.py``). With vegeta, ``--memes repeated`` asks from the
clients' home cities for popular queries, as the realistic workload does; the default,
``new``, makes every meme new (``tests/jepsen/vegeta.py``).

Exit code 1 if the verdict fails; the history and the logs are then kept and their paths
printed (with ``--keep DIR`` they are always kept, in DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from benchmarks import vegeta_tool
from benchmarks.common import CpuMeter, CpuReport
from tests.jepsen.brokers import Brokers, open_cluster
from tests.jepsen.checker import Verdict, check
from tests.jepsen.history import History
from tests.jepsen.nemesis import WEDGED_HOW, Done, Mode, Nemesis, Plan, plan_faults
from tests.jepsen.recovery import Recovery, decision_times_ms, recoveries
from tests.jepsen.region import Region
from tests.jepsen.vegeta import MEMES, Memes, VegetaLoad
from tests.jepsen.workload import Workload

Load = Literal["vegeta", "python"]

PROGRESS_EVERY_S = 10.0
CPU_EVERY_S = 1.0  # a killed process's CPU since its last sample is lost
# The load goes on past --seconds while a fault every run must have is still to come (a
# broker that restarts slowly on a busy machine), up to this many times --seconds.
MOST_LOAD_FACTOR = 3.0
SETTLE_BOUND_S = 120.0
# A load this late on its schedule is short of CPU itself: what it then measures (its
# timeouts, which fire late, and the latencies it reports) is partly its own.
LOAD_BEHIND_MS = 1000.0


@dataclass(frozen=True)
class Options:
    seconds: float = 60.0
    rate: float = 30.0
    nodes: int = 3
    processors: int = 2
    generators_standard: int = 2
    generators_ai: int = 2
    apis: int = 2
    clients: int = 40
    seed: int | None = None
    mode: Mode = "faults"
    keep: Path | None = None
    bootstrap: str | None = None  # a cluster to use instead of starting one (no broker faults)
    cluster: Brokers | None = None  # a started cluster of ours to use, left running after
    kill_every_s: float = 10.0  # availability mode
    generator_kill_every_s: float = 15.0  # availability mode
    settle_bound_s: float = SETTLE_BOUND_S
    load: Load | None = None  # None: vegeta in availability mode if it is installed
    memes: Memes = "new"  # what vegeta asks for (tests/jepsen/vegeta.py)


def choose_load(mode: Mode, load: Load | None) -> Load:
    """Faults mode needs the Python load's retries; availability mode takes vegeta when
    ``.maas/bin/vegeta`` exists."""
    if mode == "faults":
        if load == "vegeta":
            raise ValueError("faults mode needs the Python load (vegeta makes no retries)")
        return "python"
    if load == "vegeta" and vegeta_tool.installed() is None:
        raise ValueError("--load vegeta: .maas/bin/vegeta is missing (scripts/bootstrap.sh)")
    return load or ("vegeta" if vegeta_tool.installed() is not None else "python")


@dataclass
class LoadResult:
    """What a load measured: availability over first attempts, and its own lag."""

    availability: float
    lags_ms: list[float]
    note: str = ""


@dataclass
class RunResult:
    seed: int
    plan: Plan
    verdict: Verdict
    statuses: Counter[str]
    done: list[Done]
    availability: float
    recoveries: list[Recovery]
    lag_ms: dict[str, float]
    history_path: Path
    root: Path
    load: Load = "python"
    gave_up: list[tuple[str, str]] = field(default_factory=list)  # (logical op, last answer)
    unknown_after_settle: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # process -> share of one core
    machine_busy_share: float = 0.0  # of all cores, during the load, whoever used them
    ours_share: float = 0.0  # of all cores, the processes in ``cpu``
    zombies: list[tuple[str, int]] = field(default_factory=list)  # (child, log offset at SIGCONT)

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    @property
    def faults(self) -> Counter[str]:
        return Counter(d.fault.kind for d in self.done if d.error is None)

    @property
    def recovery_s(self) -> list[float]:
        """Recovery of each kill whose partitions were known; a kill after which a
        partition never decided again counts as infinitely long."""
        return _seconds(r for r in self.recoveries if r.kill.how != WEDGED_HOW)

    @property
    def wedge_recovery_s(self) -> list[float]:
        """The same for each wedge: its partitions are held up to the stall limit."""
        return _seconds(r for r in self.recoveries if r.kill.how == WEDGED_HOW)

    @property
    def recovery_p50_s(self) -> float:
        return statistics.median(self.recovery_s) if self.recovery_s else 0.0

    @property
    def recovery_max_s(self) -> float:
        return max(self.recovery_s, default=0.0)


def _seconds(found: Iterable[Recovery]) -> list[float]:
    return [r.seconds if r.seconds is not None else float("inf") for r in found if r.known]


class Say:
    """Lines on stdout with the seconds since the run started; one thread at a time."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, message: str) -> None:
        with self._lock:
            print(f"[{time.monotonic() - self.t0:6.1f}s] {message}", flush=True)


def run(options: Options) -> RunResult:
    say = Say()
    seed = options.seed if options.seed is not None else random.randrange(1 << 30)
    load = choose_load(options.mode, options.load)  # before anything starts
    if options.memes != "new" and load != "vegeta":
        raise ValueError("--memes repeated needs the vegeta load (availability mode)")
    root = options.keep or Path(tempfile.mkdtemp(prefix="jepsen-"))
    root.mkdir(parents=True, exist_ok=True)
    plan = plan_faults(
        seed,
        options.seconds,
        options.mode,
        options.processors,
        options.nodes,
        options.kill_every_s,
        options.generator_kill_every_s,
        options.generators_standard,
        options.generators_ai,
        options.apis,
    )
    say(plan.describe())
    cluster = options.cluster
    own_cluster = cluster is None and options.bootstrap is None
    bootstrap = cluster.bootstrap if cluster is not None else options.bootstrap
    if own_cluster:
        cluster = open_cluster(root / "kafka", options.nodes)
        say(f"starting a local cluster of {options.nodes} node(s) in {root / 'kafka'}")
        cluster.start()
    if bootstrap is None:
        assert cluster is not None
        bootstrap = cluster.bootstrap
    region = Region(
        bootstrap,
        root / "region",
        processors=options.processors,
        generators_standard=options.generators_standard,
        generators_ai=options.generators_ai,
        apis=options.apis,
        replication_factor=3 if options.nodes > 1 else 1,
        say=say,
    )
    history_path = root / "history.jsonl"
    history = History(history_path)
    try:
        say(f"region {region.name} on {bootstrap}: starting, logs in {region.log_dir}")
        region.start()
        result = _run_in(region, cluster, plan, history, history_path, options, load, say)
    finally:
        region.stop()
        if own_cluster and cluster is not None:
            cluster.stop()
        _close(history)
    _report(result, region, say)
    if result.ok and options.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    else:
        say(f"kept: history {history_path}, logs {region.log_dir}")
    return result


def _run_in(
    region: Region,
    cluster: Brokers | None,
    plan: Plan,
    history: History,
    history_path: Path,
    options: Options,
    load: Load,
    say: Say,
) -> RunResult:
    workload = Workload(
        region.base_url,
        region.billing_token,
        history,
        seed=plan.seed,
        rate=options.rate,
        clients=options.clients,
        seconds=options.seconds,
        mode=options.mode,
        deadline_ms=region.settings.request_deadline_ms,
        say=say,
    )
    asyncio.run(workload.setup())
    nemesis = Nemesis(plan, region, cluster, say)
    say(f"load: {load}, {options.rate:g}/s for {options.seconds:g}s, mode={options.mode}")
    if load == "vegeta":
        measured, cpu = _vegeta_load(region, cluster, workload, nemesis, options, say)
    else:
        measured, cpu = _python_load(region, cluster, workload, nemesis, options, say)
    say(cpu.line())
    say("load done, faults stopped; waiting for the region to serve again")
    region.wait_serving()
    say(f"settling: {len(workload.open_requests)} named requests without a final outcome")
    asyncio.run(workload.settle(options.settle_bound_s))
    asyncio.run(workload.final_mes())
    say("checking the history")
    verdict = check(history_path, region.bootstrap, region.name)
    times = decision_times_ms(region.bootstrap, region.name)
    lags = sorted(measured.lags_ms) or [0.0]
    return RunResult(
        seed=plan.seed,
        plan=plan,
        verdict=verdict,
        statuses=workload.counts(),
        done=list(nemesis.done),
        availability=measured.availability,
        recoveries=recoveries(times, nemesis.kills),
        lag_ms={
            "p50": lags[len(lags) // 2],
            "p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))],
            "max": lags[-1],
        },
        history_path=history_path,
        root=history_path.parent,
        load=load,
        gave_up=list(workload.gave_up),
        unknown_after_settle=list(workload.unknown_after_settle),
        cpu={name: percent / 100 for name, percent in cpu.percent.items()},
        machine_busy_share=cpu.machine_busy_percent / 100,
        ours_share=cpu.ours_percent_of_machine / 100,
        zombies=list(nemesis.zombie_marks),
    )


def _python_load(
    region: Region,
    cluster: Brokers | None,
    workload: Workload,
    nemesis: Nemesis,
    options: Options,
    say: Say,
) -> tuple[LoadResult, CpuReport]:
    """The Python open loop, in this process (so is the nemesis: its CPU is small)."""
    meter = CpuMeter(_pids(region, cluster, {"load_generator (runner)": os.getpid}), CPU_EVERY_S)
    meter.start()
    stop_progress = threading.Event()
    progress = threading.Thread(
        target=_progress,
        args=(lambda: _meme_counts(workload), nemesis, meter, say, stop_progress),
        daemon=True,
    )
    nemesis.start(time.monotonic())
    progress.start()
    try:
        # The schedule's end stops new faults at once; the ones under way finish below.
        asyncio.run(
            workload.load(
                options.seconds,
                nemesis.request_stop,
                go_on=nemesis.pending,
                most_seconds=options.seconds * MOST_LOAD_FACTOR,
            )
        )
    finally:
        nemesis.stop()
        stop_progress.set()
    cpu = meter.stop()
    deadline_ms = region.settings.request_deadline_ms
    firsts = workload.first_attempts
    answered = sum(1 for f in firsts if _ok(f.status) and f.latency_ms <= deadline_ms)
    availability = answered / len(firsts) if firsts else 0.0
    return LoadResult(availability, list(workload.lags_ms)), cpu


def _vegeta_load(
    region: Region,
    cluster: Brokers | None,
    workload: Workload,
    nemesis: Nemesis,
    options: Options,
    say: Say,
) -> tuple[LoadResult, CpuReport]:
    """vegeta sends; this process only runs the nemesis and measures."""
    binary = vegeta_tool.installed()
    assert binary is not None
    root = workload.history.path.parent / "vegeta"
    vegeta = VegetaLoad(
        workload, root, options.rate, options.seconds, binary, say, memes=options.memes
    )
    count = vegeta.write_targets()
    say(f"vegeta: {count} targets in {vegeta.targets_path}; {' '.join(vegeta.command())}")
    load = {"load_generator (vegeta)": lambda: vegeta.pid, "runner": os.getpid}
    meter = CpuMeter(_pids(region, cluster, load), CPU_EVERY_S)
    meter.start()
    stop_progress = threading.Event()
    progress = threading.Thread(
        target=_progress,
        args=(lambda: f"vegeta pid={vegeta.pid}", nemesis, meter, say, stop_progress),
        daemon=True,
    )
    try:
        vegeta.start()
        nemesis.start(time.monotonic())
        progress.start()
        vegeta.wait(before_reaping=meter.sample)
    finally:
        vegeta.stop()
        nemesis.stop()
        stop_progress.set()
    cpu = meter.stop()
    outcome = vegeta.record(region.settings.request_deadline_ms)
    note = (
        f"vegeta sent {outcome.sent} of {outcome.planned}; availability from vegeta's send "
        f"(its latency alone): {outcome.availability_from_send:.4f}; latency ms "
        f"{_percentiles(outcome.latencies_ms)}"
    )
    say(note)
    return LoadResult(outcome.availability, outcome.lags_ms, note), cpu


def _pids(
    region: Region, cluster: Brokers | None, load: dict[str, Callable[[], int | None]]
) -> Callable[[], dict[str, int | None]]:
    """The pids of every process of the run, by name, as they are now."""
    nodes = getattr(cluster, "nodes", [])

    def pids() -> dict[str, int | None]:
        found = {name: child.pid() for name, child in region.children.items()}
        for n, node in enumerate(nodes, start=1):
            found[f"broker-{n}"] = node.pid()
        found.update((name, pid()) for name, pid in load.items())
        return found

    return pids


def _ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def _percentiles(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50:.0f} p99 {p99:.0f} max {ordered[-1]:.0f}"


def _meme_counts(workload: Workload) -> str:
    counts = workload.counts()
    memes = sum(n for key, n in counts.items() if key.startswith("meme "))
    statuses = {k: n for k, n in sorted(counts.items()) if k.startswith("meme ")}
    return f"meme attempts={memes} {statuses}"


def _progress(
    describe: Callable[[], str],
    nemesis: Nemesis,
    meter: CpuMeter,
    say: Say,
    stop: threading.Event,
) -> None:
    while not stop.wait(PROGRESS_EVERY_S):
        cpu = meter.so_far()
        load = {k: f"{v:.0f}%" for k, v in cpu.percent.items() if k.startswith("load_generator")}
        say(
            f"progress: {describe()} faults={dict(nemesis.counts())} cpu: {load} "
            f"machine busy {cpu.machine_busy_percent:.0f}%"
        )


def _report(result: RunResult, region: Region, say: Say) -> None:
    lines = ["", "=== fault schedule (as it happened) ==="]
    for d in sorted(result.done, key=lambda d: d.started_s):
        error = f" ERROR {d.error}" if d.error else ""
        lines.append(
            f"  {d.started_s:6.1f}s..{d.ended_s:6.1f}s {d.fault.kind} {d.fault.target} "
            f"{d.fault.point} -> {d.note}{error}"
        )
    happened = {id(d.fault) for d in result.done}
    skipped = [f for lane in result.plan.lanes for f in lane if id(f) not in happened]
    if skipped:
        lines.append(f"  not reached before the load ended: {[f.describe() for f in skipped]}")
    lines.append("=== attempts by op and status ===")
    for key, n in sorted(result.statuses.items()):
        lines.append(f"  {key}: {n}")
    last_answers = Counter(answer for _, answer in result.gave_up).most_common()
    lines.append(
        f"  gave up: {len(result.gave_up)}"
        + (f" (their last answers: {dict(last_answers)})" if last_answers else "")
        + f"  still open after settling: {len(result.unknown_after_settle)}"
    )
    lines.append("=== availability and recovery ===")
    lines.append(
        f"  availability (meme first attempts, 2xx within the deadline): {result.availability:.4f}"
    )
    for r in result.recoveries:
        if not r.known:
            lines.append(
                f"  {r.kill.name} {r.kill.how}: recovery not timed, it owned no partition known "
                "to the coordinator or in its log (a rebalance, or its assignment not restored yet)"
            )
            continue
        per = {p: (round(s, 2) if s is not None else None) for p, s in r.per_partition_s.items()}
        lines.append(f"  {r.kill.name} {r.kill.how}: recovery {r.seconds} s  {per}")
    for what, seconds in (("kills", result.recovery_s), ("wedges", result.wedge_recovery_s)):
        if seconds:
            lines.append(
                f"  recovery over {len(seconds)} {what}: p50 {statistics.median(seconds):.2f} s, "
                f"max {max(seconds):.2f} s"
            )
    lines.append(
        f"  load: {result.load}; its lag ms (sent - scheduled): p50 {result.lag_ms['p50']:.0f} "
        f"p99 {result.lag_ms['p99']:.0f} max {result.lag_ms['max']:.0f}"
    )
    if result.lag_ms["p99"] > LOAD_BEHIND_MS:
        lines.append(
            f"  the load fell behind its schedule by {result.lag_ms['p99'] / 1000:.1f} s (p99): "
            "its timeouts and latencies are then partly its own, not the service's "
            "(docs/reliability.md)"
        )
    lines.append("=== cpu during the load (shares of one core) ===")
    lines += [f"  {name}: {share:.3f}" for name, share in result.cpu.items()]
    lines.append(
        f"  machine busy: {result.machine_busy_share:.1%} of {os.cpu_count()} cores; "
        f"the processes above: {result.ours_share:.1%}, others: "
        f"{result.machine_busy_share - result.ours_share:.1%}"
    )
    lines.append("=== what the logs say ===")
    lines += _zombie_notes(result, region)
    lines += _log_notes(region)
    lines.append("=== verdict ===")
    lines.append(f"  ok={result.verdict.ok} stats={result.verdict.stats}")
    lines += [f"  problem: {p}" for p in result.verdict.problems[:50]]
    say("\n".join(lines))


ZOMBIE_SIGNS = ("fatal", "fenced", "aborted", "revoked", "assigned", "hung")


def _zombie_notes(result: RunResult, region: Region) -> list[str]:
    """What each paused instance did once resumed: fenced (exit), aborted, rejoined."""
    notes = []
    for name, offset in result.zombies:
        with region.children[name].log_path.open("rb") as log:
            log.seek(offset)
            after = log.read().decode(errors="replace").splitlines()
        signs = [line[:200] for line in after if any(s in line for s in ZOMBIE_SIGNS)]
        notes.append(f"  zombie {name} after SIGCONT: {signs[:3] or ['nothing notable']}")
    return notes


def _log_notes(region: Region) -> list[str]:
    notes = []
    for needle in ("Traceback", " ERROR ", "fenced", "rejoining with a fresh", "watchdog"):
        for name, found in region.grep(needle).items():
            example = found[0][:200]
            notes.append(f"  {name}: {len(found)} lines with {needle.strip()!r}, e.g. {example}")
    for exit_ in region.exits:
        notes.append(f"  exit: {exit_.name} code={exit_.code}")
    return notes or ["  nothing notable"]


def _close(history: History) -> None:
    close = getattr(history, "close", None)
    if close is not None:
        close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.jepsen.run", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=30.0, help="meme requests per second")
    parser.add_argument("--nodes", type=int, default=3, help="brokers of the local cluster")
    parser.add_argument("--processors", type=int, default=2, help="ledger processor instances")
    parser.add_argument(
        "--generators-standard", type=int, default=2, help="standard generator pool processes"
    )
    parser.add_argument("--generators-ai", type=int, default=2, help="AI generator pool processes")
    parser.add_argument("--api", type=int, default=2, help="API processes, on one port")
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--mode", choices=["faults", "availability"], default="faults")
    parser.add_argument("--keep", type=Path, default=None, help="keep history and logs here")
    parser.add_argument("--kill-every-s", type=float, default=10.0)
    parser.add_argument("--generator-kill-every-s", type=float, default=15.0)
    parser.add_argument(
        "--memes",
        choices=MEMES,
        default="new",
        help="with vegeta: every meme new (the default), or repeated: home cities and "
        "popular queries as in the realistic workload",
    )
    parser.add_argument(
        "--load",
        choices=["vegeta", "python"],
        default=None,
        help="availability mode: vegeta if .maas/bin/vegeta exists (the default), else "
        "python; faults mode always python",
    )
    args = parser.parse_args(argv)
    options = Options(
        seconds=args.seconds,
        rate=args.rate,
        nodes=args.nodes,
        processors=args.processors,
        generators_standard=args.generators_standard,
        generators_ai=args.generators_ai,
        apis=args.api,
        clients=args.clients,
        seed=args.seed,
        mode=args.mode,
        keep=args.keep,
        bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        kill_every_s=args.kill_every_s,
        generator_kill_every_s=args.generator_kill_every_s,
        load=args.load,
        memes=args.memes,
    )
    result = run(options)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
