"""Recovery time of a processor kill: from the kill to the first decision again on each
partition the killed instance owned.

Every decision writes one record to ``<region>.ledger-state-changelog``, in the
transaction that commits it, on the input's partition, stamped with the processor's
clock when it was produced. Read with ``read_committed``, a partition's record times are
the times of its committed decisions; aborted ones (the killed instance's open
transaction) are not seen. A kill's recovery time is the longest over its partitions.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass

from core.settings import Settings
from core.topic_reader import read_topic
from core.topics import Topics
from tests.jepsen.nemesis import ProcessorKill


@dataclass(frozen=True)
class Recovery:
    kill: ProcessorKill
    per_partition_s: dict[int, float | None]  # None: no decision since the kill

    @property
    def known(self) -> bool:
        """Whether the kill's partitions were known. Neither the group coordinator (asked
        at the kill, during a broker fault) nor the instance's log may say: killed in a
        rebalance, or before it had restored its assignment, it owned none."""
        return bool(self.per_partition_s)

    @property
    def seconds(self) -> float | None:
        """The slowest partition; None if one never decided again (or none was known)."""
        values = list(self.per_partition_s.values())
        if not values or any(v is None for v in values):
            return None
        return max(v for v in values if v is not None)


def decision_times_ms(bootstrap: str, region: str) -> dict[int, list[int]]:
    """Committed changelog record times, per partition, sorted."""
    settings = Settings(bootstrap_servers=bootstrap, region=region)
    times: dict[int, list[int]] = defaultdict(list)
    for message in read_topic(settings, Topics(region).ledger_changelog):
        partition = message.partition()
        if partition is not None:  # always set on a consumed message; typed optional
            times[partition].append(message.timestamp()[1])
    for values in times.values():
        values.sort()
    return times


def recoveries(times: dict[int, list[int]], kills: list[ProcessorKill]) -> list[Recovery]:
    found = []
    for kill in kills:
        per_partition: dict[int, float | None] = {}
        for partition in sorted(kill.partitions):
            stamps = times.get(partition, [])
            i = bisect.bisect_right(stamps, kill.at_ms)
            per_partition[partition] = (stamps[i] - kill.at_ms) / 1000 if i < len(stamps) else None
        found.append(Recovery(kill, per_partition))
    return found
