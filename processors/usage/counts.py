"""Hourly request counts: the pure part of the usage analytics (no Kafka, no faust).

A client's usage is a small mapping ``{"YYYY-MM-DDTHH": requests}`` in UTC, keeping the
newest ``retention_hours`` hours. Values are replaced, never mutated in place, because a
faust table only writes its changelog when a key is assigned.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

Hours = dict[str, int]


def hour_of(ms: int) -> str:
    """The UTC hour an event time (ms since the epoch) falls in, as ``YYYY-MM-DDTHH``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H")


def add_request(hours: Mapping[str, int], hour: str, retention_hours: int) -> Hours:
    """``hours`` with one more request in ``hour``, pruned to the newest hours kept.

    The hour labels sort as time does, so pruning keeps the largest labels; a late event
    for an hour already pruned is dropped rather than bringing the hour back.
    """
    updated = dict(hours)
    updated[hour] = updated.get(hour, 0) + 1
    if len(updated) <= retention_hours:
        return updated
    kept = sorted(updated)[-retention_hours:]
    return {h: updated[h] for h in kept}


def summarize(usage: Iterable[tuple[str, Mapping[str, int]]], top: int = 10) -> dict[str, object]:
    """Totals over many clients: requests per hour, the number of clients, the top clients."""
    per_hour: Counter[str] = Counter()
    totals: dict[str, int] = {}
    for client_id, hours in usage:
        per_hour.update(hours)
        totals[client_id] = sum(hours.values())
    busiest = heapq.nlargest(top, totals.items(), key=lambda item: (item[1], item[0]))
    return {
        "hours": dict(sorted(per_hour.items())),
        "requests": sum(per_hour.values()),
        "clients": len(totals),
        "top_clients": [{"client_id": c, "requests": n} for c, n in busiest],
    }
