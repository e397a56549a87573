"""The fault runner's recovery times: from a processor kill to each of its partitions'
next committed decision (``tests.jepsen.recovery``)."""

from __future__ import annotations

from tests.jepsen.nemesis import ProcessorKill
from tests.jepsen.recovery import recoveries

DECISIONS_MS = {0: [900, 1_500, 4_000], 1: [1_200, 2_500], 2: [800]}


def test_a_kill_recovers_when_its_slowest_partition_decides_again() -> None:
    (found,) = recoveries(DECISIONS_MS, [ProcessorKill("processor-0", 1_000, {0, 1}, "kill -9")])
    assert found.known
    assert found.per_partition_s == {0: 0.5, 1: 0.2}
    assert found.seconds == 0.5


def test_a_partition_that_never_decides_again_has_no_recovery() -> None:
    (found,) = recoveries(DECISIONS_MS, [ProcessorKill("processor-0", 1_000, {0, 2}, "kill -9")])
    assert found.known
    assert found.per_partition_s == {0: 0.5, 2: None}
    assert found.seconds is None


def test_a_kill_whose_partitions_were_not_known_is_not_timed() -> None:
    (found,) = recoveries(DECISIONS_MS, [ProcessorKill("processor-1", 1_000, set(), "kill -9")])
    assert not found.known
    assert found.seconds is None
