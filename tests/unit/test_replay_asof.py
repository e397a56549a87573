"""``maas replay`` cut rules, without a broker: ``select_entries`` over a ledger that
``MemoryLedger`` (the live fold) wrote, laid out on partitions as the processor does
(key = client id, offsets per partition, with gaps where transaction markers sit).
"""

from __future__ import annotations

import itertools

import pytest

from core.topics import key_partition
from ledger.memory import MemoryLedger
from ledger.replay import Replay
from ledger.state import Account
from maas.replay_cli import AsOf, parse_offsets, parse_time_ms, select_entries
from schemas.events import (
    ClientRegistered,
    LedgerEntryUnion,
    MemeGenerated,
    MemeRequested,
    TokensPurchased,
    dump,
)

REGION = "eu"
PARTITIONS = 2
CLIENTS = ("alice", "bob", "carol")
Record = tuple[int, int, bytes | None, bytes]


class Inputs:
    """Inputs with ids from a counter and an explicit clock."""

    def __init__(self) -> None:
        self.ledger = MemoryLedger()
        self._ids = itertools.count(1)

    def _id(self) -> str:
        return f"e{next(self._ids)}"

    def register(self, client: str, at_ms: int) -> None:
        self.ledger.handle(
            ClientRegistered(
                event_id=self._id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=at_ms,
                api_key_sha256="ab" * 32,
                reply_to=0,
            )
        )

    def buy(self, client: str, tokens: int, at_ms: int) -> None:
        self.ledger.handle(
            TokensPurchased(
                event_id=self._id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=at_ms,
                purchase_id=self._id(),
                tokens=tokens,
                reply_to=0,
            )
        )

    def request_only(self, client: str, at_ms: int) -> str:
        """A request with no outcome (yet); returns its id."""
        request_id = self._id()
        self.ledger.handle(
            MemeRequested(
                event_id=self._id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=at_ms,
                request_id=request_id,
                fingerprint="0123456789abcdef",
                lat=1.0,
                lon=2.0,
                query="food",
                deadline_ms=at_ms + 5_000,
                reply_to=0,
            )
        )
        return request_id

    def meme(self, client: str, at_ms: int) -> None:
        request_id = self.request_only(client, at_ms)
        self.ledger.handle(
            MemeGenerated(
                event_id=self._id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=at_ms + 1,
                request_id=request_id,
                meme_id="m",
                kind="standard",
                template="t",
                caption="c",
                image_key="k",
            )
        )

    def accounts(self) -> dict[str, Account]:
        return {c: a for c in CLIENTS if (a := self.ledger.state.account(c)) is not None}


def partition_of(client: str) -> int:
    return key_partition(client.encode(), PARTITIONS)


def layout(entries: list[LedgerEntryUnion]) -> list[Record]:
    """Entries on their partitions; every third offset is a transaction marker."""
    next_offset = dict.fromkeys(range(PARTITIONS), 0)
    records: list[Record] = []
    for i, entry in enumerate(entries):
        p = partition_of(entry.client_id)
        records.append((p, next_offset[p], entry.client_id.encode(), dump(entry)))
        next_offset[p] += 2 if i % 3 == 2 else 1
    return records


def fold(records: list[Record], as_of: AsOf | None = None, client: str | None = None) -> Replay:
    return Replay().apply_all(select_entries(records, as_of, client))


@pytest.fixture
def day() -> tuple[Inputs, dict[str, Account], int, int]:
    """A first phase (up to t=1000), its accounts and entry count, then a second phase."""
    inputs = Inputs()
    for i, client in enumerate(CLIENTS):
        inputs.register(client, 10 + i)
        inputs.buy(client, 5, 20 + i)
    for t in range(100, 1000, 100):
        inputs.meme(CLIENTS[t // 100 % 3], t)
    first_phase = inputs.accounts()
    first_count = len(inputs.ledger.entries)
    for t in range(2000, 3000, 100):
        inputs.meme(CLIENTS[t // 100 % 3], t)
    inputs.buy("bob", 7, 3000)
    return inputs, first_phase, first_count, 1000


def test_a_replay_of_everything_equals_the_live_accounts(day) -> None:
    inputs, _, _, _ = day
    replay = fold(layout(inputs.ledger.entries))
    assert replay.violations == []
    assert replay.accounts == inputs.accounts()


def test_as_of_offset_stops_every_partition_before_that_offset(day) -> None:
    inputs, _, _, _ = day
    records = layout(inputs.ledger.entries)
    cut = 5
    expected = [r for r in records if r[1] < cut]
    replay = fold(records, parse_offsets(str(cut)))
    assert replay.violations == []
    assert replay.entries == len(expected)
    assert replay.accounts == fold(expected).accounts


def test_as_of_offset_per_partition_reads_unnamed_partitions_to_the_end(day) -> None:
    inputs, first_phase, first_count, _ = day
    records = layout(inputs.ledger.entries)
    # The offset each partition had reached when the first phase ended.
    ends: dict[int, int] = {}
    for p, offset, _, _ in records[:first_count]:
        ends[p] = offset + 1
    replay = fold(records, parse_offsets(",".join(f"{p}:{o}" for p, o in ends.items())))
    assert replay.accounts == first_phase

    only_first = min(ends)
    replay = fold(records, parse_offsets(f"{only_first}:{ends[only_first]}"))
    live = inputs.accounts()
    for client, account in replay.accounts.items():
        phase = first_phase if partition_of(client) == only_first else live
        assert account == phase[client]


def test_as_of_time_gives_the_balances_at_that_time(day) -> None:
    inputs, first_phase, _, first_end_ms = day
    records = layout(inputs.ledger.entries)
    replay = fold(records, AsOf(time_ms=first_end_ms))
    assert replay.violations == []
    assert replay.accounts == first_phase
    assert fold(records, AsOf(time_ms=0)).accounts == {}


def test_as_of_time_cuts_each_client_at_its_first_later_entry() -> None:
    """A client's entries carry several clocks: an earlier time after a later one must
    not be folded, or the hash chain would have a gap."""
    inputs = Inputs()
    inputs.register("alice", 10)
    inputs.buy("alice", 5, 500)
    inputs.buy("alice", 5, 100)  # stamped by a clock behind the first one
    replay = fold(layout(inputs.ledger.entries), AsOf(time_ms=200))
    assert replay.violations == []
    assert replay.accounts["alice"].balance == 0
    assert replay.accounts["alice"].seq == 1


def test_client_selects_one_account(day) -> None:
    inputs, _, _, _ = day
    replay = fold(layout(inputs.ledger.entries), client="bob")
    assert replay.violations == []
    assert replay.accounts == {"bob": inputs.accounts()["bob"]}


def test_parse_offsets_and_time() -> None:
    assert parse_offsets("12") == AsOf(offset_all=12)
    assert parse_offsets("0:5,3:9") == AsOf(offsets={0: 5, 3: 9})
    assert AsOf(offset_all=4, offsets={1: 2}).offset_limit(1) == 2
    assert AsOf(offset_all=4, offsets={1: 2}).offset_limit(0) == 4
    for bad in ("-1", "0:5,3", "x", "1:-2"):
        with pytest.raises(ValueError):
            parse_offsets(bad)
    assert parse_time_ms("1970-01-01T00:00:01Z") == 1000
    assert parse_time_ms("1970-01-01T00:00:01") == 1000  # naive is UTC
    assert parse_time_ms("1970-01-01T01:00:01+01:00") == 1000
