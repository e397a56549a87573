"""Where the ledger sends an approval in its pool's topic (``work_partition``)."""

from __future__ import annotations

from uuid import uuid4

from processors.ledger.outputs import work_partition
from schemas.events import Kind, MemeApproved

PARTITIONS = 6


def approval(kind: Kind, query: str, lat: float, lon: float, client_id: str = "c1") -> MemeApproved:
    return MemeApproved(
        event_id=uuid4().hex,
        client_id=client_id,
        region="eu",
        occurred_at_ms=1,
        request_id=uuid4().hex,
        kind=kind,
        lat=lat,
        lon=lon,
        query=query,
        deadline_ms=2,
    )


def test_the_same_standard_meme_goes_to_one_partition_whoever_asks() -> None:
    """Its generator process has it cached after the first time: the other processes
    of the pool need not draw and keep it too. Coordinates a few hundred metres apart
    are the same place."""
    asks = [
        approval("standard", "food", 40.7306 + i * 0.0002, -73.9352 - i * 0.0002, f"c{i}")
        for i in range(20)
    ]
    assert len({work_partition(a, PARTITIONS) for a in asks}) == 1


def test_one_clients_standard_memes_of_many_queries_spread_over_the_pool() -> None:
    asks = [approval("standard", f"topic {i}", 40.7306, -73.9352) for i in range(24)]
    assert len({work_partition(a, PARTITIONS) for a in asks}) > PARTITIONS // 2


def test_one_clients_ai_memes_spread_over_the_pool_even_for_one_query() -> None:
    """An AI meme is drawn for its request id and never cached: every generator of the
    pool can work for one busy client."""
    asks = [approval("ai", "food", 40.7306, -73.9352) for _ in range(24)]
    assert len({work_partition(a, PARTITIONS) for a in asks}) > PARTITIONS // 2


def test_every_partition_is_in_range() -> None:
    for lat, lon in [(-90.0, -180.0), (90.0, 180.0), (-0.04, 0.04), (0.0, 0.0)]:
        for kind in ("standard", "ai"):
            for partitions in (1, 6, 48):
                assert 0 <= work_partition(approval(kind, "q", lat, lon), partitions) < partitions
