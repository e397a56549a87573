"""Scenario: the Jepsen-style run, short forms (``tests/jepsen``; the long forms are
``python -m tests.jepsen.run --seconds 600 ...``).

(a) Faults. A 3-node cluster, 2 ledger processors, 60 s of load at a modest rate while the
nemesis, in two lanes, kills a processor at a random moment, kills one at the
``after_produce`` and one at the ``after_commit`` boundary (a third point by seed),
pauses one past its session and transaction timeouts (a zombie), kills a generator pool,
pauses one past its session (another pool makes its memes again, and it resumes with
renders under way), kills an API process with calls in flight (their clients retry),
kills the broker leading most partitions, pauses one past its session, and restarts one
cleanly. We expect the checker's verdict to be ok: no double charge, nothing
acknowledged lost, no negative balance, every answer matching the ledger.

(b) Availability. One processor instance killed every 7 s (alternating) and a standard
generator pool every 15 s (two pools, alternating), the load sent by vegeta
(``tests/jepsen/vegeta.py``: a compiled generator, so that the load does not take the
CPU it measures) asking for popular memes from the clients' home cities (``repeated``).
We expect at least 99% of the meme requests answered 2xx within the deadline on their
first attempt, and each kill's partitions deciding again within 2 s (p50) and 5 s (max). Without
``.maas/bin/vegeta`` the form installs it with go, or skips if go is missing.

The faults form runs on a 3-node cluster of its own, the availability form on one broker
of its own (the figures for three are in docs/reliability.md); neither uses
``KAFKA_BOOTSTRAP_SERVERS`` (broker faults need brokers we can kill). Each run has a
fresh region. A failure prints the seed; ``--seed`` replays the schedule.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import vegeta_tool
from tests.jepsen.brokers import Brokers, open_cluster
from tests.jepsen.nemesis import BROKER_KINDS, EXTRA_ONLY, PROCESS_KINDS
from tests.jepsen.run import Options, RunResult, run

pytestmark = [pytest.mark.kafka, pytest.mark.scenario]

FAULTS_NODES = 3
FAULTS_SECONDS = 60.0  # the load goes on past it until every kind of fault has happened
FAULTS_RATE = 20.0
AVAILABILITY_SECONDS = 28.0  # three processor kills, a pool kill
AVAILABILITY_KILL_EVERY_S = 7.0
# Not the 100/s of the target: on this 2-core machine the region with one broker
# held 99% at 40/s for 120 s under the kills, and saturated from 50/s (the broker alone
# takes ~0.7 of a core at 40/s); three brokers cost more than one. The figures are in
# docs/reliability.md. The form runs on one broker of its own, at 30/s, for headroom.
AVAILABILITY_RATE = 30.0
EVERY_KIND = {*PROCESS_KINDS, *BROKER_KINDS} - set(EXTRA_ONLY)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Brokers]:
    brokers = open_cluster(tmp_path_factory.mktemp("jepsen-kafka"), nodes=FAULTS_NODES)
    brokers.start()
    try:
        yield brokers
    finally:
        # Its data is thrown away: a crash of each costs nothing, where a clean stop takes
        # ~5.5 s (the last node waits out the Raft quorum it lost).
        for node_id in range(1, FAULTS_NODES + 1):
            brokers.kill(node_id)


# What a failed run's processors said about ownership: in CI the run's directory is gone
# afterwards, and these lines located the last fork (docs/reliability.md).
OWNERSHIP_LINES = (
    "ledger processor started",
    "partitions assigned",
    "partitions revoked",
    "partition restored",
    "level=CRITICAL",  # a fatal error or a hung call: the process exits
)
OWNERSHIP_LINES_MAX = 120


def _explain(result: RunResult) -> str:
    faults = [f"{d.fault.describe()}: {d.note or d.error}" for d in result.done]
    lines = sorted(  # each line begins with its time: the instances interleaved
        line
        for log in (result.root / "region" / "logs").glob("processor-*.log")
        for line in log.read_text(errors="replace").splitlines()
        if any(marker in line for marker in OWNERSHIP_LINES)
    )
    ownership = "\n".join(lines[-OWNERSHIP_LINES_MAX:])
    return (
        f"seed={result.seed} history={result.history_path} problems={result.verdict.problems[:20]}"
        f" faults={faults}\nprocessors' ownership lines:\n{ownership}"
    )


@pytest.mark.timeout(600)
def test_faults_verdict_ok(cluster: Brokers, tmp_path: Path) -> None:
    result = run(
        Options(
            cluster=cluster,
            seconds=FAULTS_SECONDS,
            rate=FAULTS_RATE,
            nodes=FAULTS_NODES,
            processors=2,
            clients=40,
            mode="faults",
            keep=tmp_path / "faults",
        )
    )
    assert result.verdict.ok, _explain(result)
    errors = [(d.fault.kind, d.error) for d in result.done if d.error]
    assert errors == [], _explain(result)
    assert set(result.faults) == EVERY_KIND, f"{result.faults} {_explain(result)}"
    fired = {d.fault.point for d in result.done if d.note.startswith("fired")}
    assert {"after_produce", "after_commit"} <= fired, f"{fired} {_explain(result)}"
    assert result.gave_up == [] and result.unknown_after_settle == [], _explain(result)
    # The AI pool was under the faults too, and check 8 judged its charges.
    assert result.verdict.stats.get("charged_ai", 0) > 0, result.verdict.stats


@pytest.fixture(scope="module")
def vegeta() -> Path:
    """``.maas/bin/vegeta``, installed with go if missing (as scripts/bootstrap.sh does)."""
    binary = vegeta_tool.installed()
    if binary is not None:
        return binary
    try:
        return vegeta_tool.install()
    except RuntimeError as exc:
        pytest.skip(f"the availability form needs vegeta in .maas/bin: {exc}")


@pytest.mark.timeout(300)
def test_availability_under_processor_and_generator_kills(vegeta: Path, tmp_path: Path) -> None:
    broker = open_cluster(tmp_path / "kafka", nodes=1)
    broker.start()
    try:
        result = _availability(broker, tmp_path)
    finally:
        broker.stop()
    assert result.load == "vegeta"
    assert result.verdict.ok, _explain(result)
    assert len(result.recovery_s) >= 3, _explain(result)  # kills with known partitions
    assert result.availability >= 0.99, f"{result.availability:.4f} {_explain(result)}"
    assert result.recovery_p50_s <= 2.0, f"{result.recovery_s} {_explain(result)}"
    assert result.recovery_max_s <= 5.0, f"{result.recovery_s} {_explain(result)}"


def _availability(broker: Brokers, tmp_path: Path) -> RunResult:
    return run(
        Options(
            cluster=broker,
            seconds=AVAILABILITY_SECONDS,
            rate=AVAILABILITY_RATE,
            nodes=1,
            processors=2,
            clients=40,
            mode="availability",
            keep=tmp_path / "availability",
            kill_every_s=AVAILABILITY_KILL_EVERY_S,
            load="vegeta",
            memes="repeated",  # keyed ops with popular queries: the checker's other naming
        )
    )
