"""``maas replay``: rebuild balances from the ledger topic and check the guarantees.

The fold is ``ledger.replay.Replay`` (``evolve``, the function the live processor builds
every entry with), so a replay of the whole topic equals the live state. Options:

- ``--client ID``: fold only that client's entries (the topic's key is the client id),
  read from the one partition that holds them;
- ``--as-of-offset N`` or ``--as-of-offset P:N,P:N``: the state a consumer positioned at
  offset ``N`` of each partition would have, i.e. entries at offsets *below* ``N``
  (Kafka's "next offset" convention; transaction markers take offsets too). With the
  ``P:N`` form, a partition not named is read to its end;
- ``--as-of-time ISO``: per client, the entries up to the first one with
  ``occurred_at_ms`` after the time (a naive time is UTC). A client's entries are in
  ``seq`` order but their times come from several clocks (API instances, the processor's
  deadline timer), so the cut is a per-client prefix: the hash chain never has a gap;
- ``--what-if-price ai=2,standard=1``: also re-decide the history under other prices
  with the live fold (``ledger.whatif``) and print, per client, the old and new
  figures instead of the accounts.

A progress bar (entries read, rate, share of the topic) goes to stderr, and the
throughput at the end. The exit status is 1 if any guarantee is violated.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import Consumer, TopicPartition

from core import logs
from core.clock import to_ms
from core.settings import Settings
from core.topic_reader import partitions_to_read, position_of, read_topic
from core.topics import Topics
from ledger.replay import Replay
from ledger.whatif import CSV_HEADER, WhatIf, csv_row, parse_pricing
from schemas.events import LedgerEntryUnion, parse_entry

PROGRESS_INTERVAL_S = 0.2
BAR_WIDTH = 30


@dataclass(frozen=True)
class AsOf:
    """Where a replay stops. Offsets are exclusive ends; the time is inclusive."""

    offset_all: int | None = None  # every partition
    offsets: dict[int, int] = field(default_factory=dict)  # per partition, wins over all
    time_ms: int | None = None

    def offset_limit(self, partition: int) -> int | None:
        return self.offsets.get(partition, self.offset_all)


def parse_offsets(text: str) -> AsOf:
    """``"1234"`` (every partition) or ``"0:1234,3:99"`` (those partitions)."""
    if ":" not in text:
        return AsOf(offset_all=_non_negative(text))
    offsets = {}
    for part in text.split(","):
        partition, sep, offset = part.partition(":")
        if not sep:
            raise ValueError(f"expected partition:offset, got {part!r}")
        offsets[_non_negative(partition)] = _non_negative(offset)
    return AsOf(offsets=offsets)


def parse_time_ms(text: str) -> int:
    """An ISO 8601 time (``2026-11-25T03:00:00Z``; naive = UTC) in ms since the epoch."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--as-of-time: not an ISO 8601 time such as 2026-11-25T03:00:00Z: {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_ms(moment)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"--as-of-offset: not a whole number: {text!r}") from None
    if value < 0:
        raise ValueError(f"an offset cannot be negative: {text}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    replay = sub.add_parser("replay", help="rebuild balances from the ledger topic")
    replay.add_argument("--client", help="fold and print only this client's account")
    replay.add_argument(
        "--as-of-offset",
        metavar="N|P:N,...",
        help="stop each partition before offset N (or the named partitions at theirs)",
    )
    replay.add_argument(
        "--as-of-time",
        metavar="ISO",
        help="per client, entries up to this time (occurred_at_ms <= it; naive = UTC)",
    )
    replay.add_argument(
        "--what-if-price",
        metavar="KIND=TOKENS,...",
        help="print old vs new balances under these prices, e.g. ai=2,standard=1",
    )
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    replay.set_defaults(func=_replay)


class Progress:
    """A one-line bar on stderr, redrawn at most every ``PROGRESS_INTERVAL_S``."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.started = time.monotonic()
        self._next_draw = self.started

    def update(self, read: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_draw:
            return
        self._next_draw = now + PROGRESS_INTERVAL_S
        rate = read / max(now - self.started, 1e-9)
        if self.total:
            # The total counts transaction markers too: the share is a close estimate.
            share = min(read / self.total, 1.0)
            filled = int(share * BAR_WIDTH)
            bar = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {share:4.0%} "
        else:
            bar = ""
        print(f"\r{bar}entries={read:,} rate={rate:,.0f}/s", end="", file=sys.stderr, flush=True)


def ledger_size(
    settings: Settings, topic: str, key: bytes | None = None, timeout_s: float = 10.0
) -> int | None:
    """Offsets in the topic, or in the partition of ``key`` (entries plus transaction
    markers); None if unknown."""
    consumer = Consumer({**settings.kafka_common(), "group.id": "maas-replay-size"})
    try:
        total = 0
        for partition in partitions_to_read(consumer, topic, key, timeout_s):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s
            )
            total += high - low
        return total
    except Exception:  # the bar is a nicety: never fail a replay for it
        return None
    finally:
        consumer.close()


def select_entries(
    records: Iterable[tuple[int, int, bytes | None, bytes]],
    as_of: AsOf | None = None,
    client: str | None = None,
) -> Iterator[LedgerEntryUnion]:
    """The entries a replay folds, from (partition, offset, key, value) in topic order.

    Pure, so the cut rules are tested without a broker (``tests/unit/test_replay_asof``).
    """
    as_of = as_of or AsOf()
    key = client.encode() if client is not None else None
    limited = as_of.offset_all is not None or bool(as_of.offsets)
    stopped: set[str] = set()  # clients past the time cut
    for partition, offset, record_key, value in records:
        if limited:
            limit = as_of.offset_limit(partition)
            if limit is not None and offset >= limit:
                continue
        if key is not None and record_key != key:
            continue
        entry = parse_entry(value)
        if client is not None and entry.client_id != client:
            continue  # a key that is not the client id: trust the entry
        if as_of.time_ms is not None:
            if entry.client_id in stopped:
                continue
            if entry.occurred_at_ms > as_of.time_ms:
                stopped.add(entry.client_id)
                continue
        yield entry


def replay_ledger(
    settings: Settings,
    progress: bool = False,
    *,
    client: str | None = None,
    as_of: AsOf | None = None,
    sink: Callable[[LedgerEntryUnion], None] | None = None,
) -> Replay:
    """Fold the ledger topic (all of it, or up to ``as_of``; one client or all).

    ``sink`` sees every entry that is folded, in order (the what-if fold uses it).
    """
    topic = Topics(settings.region).ledger
    key = client.encode() if client is not None else None  # one client: its partition
    bar = Progress(ledger_size(settings, topic, key)) if progress else None
    read = 0

    def records() -> Iterator[tuple[int, int, bytes | None, bytes]]:
        nonlocal read
        for msg in read_topic(settings, topic, key=key):
            read += 1
            if bar is not None:
                bar.update(read)
            _, partition, offset = position_of(msg)
            yield partition, offset, msg.key(), msg.value() or b""

    replay = Replay()
    for entry in select_entries(records(), as_of, client):
        replay.apply(entry)
        if sink is not None:
            sink(entry)
    if bar is not None:
        bar.total = read  # done: transaction markers no longer make the share look low
        bar.update(read, force=True)
        print(file=sys.stderr)
    return replay


def _replay(args: argparse.Namespace) -> int:
    logs.configure("replay")
    settings = Settings.from_env()
    try:
        as_of = parse_offsets(args.as_of_offset) if args.as_of_offset else AsOf()
        if args.as_of_time:
            as_of = AsOf(as_of.offset_all, as_of.offsets, parse_time_ms(args.as_of_time))
        whatif = WhatIf(parse_pricing(args.what_if_price)) if args.what_if_price else None
    except ValueError as exc:
        print(f"maas replay: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    replay = replay_ledger(
        settings,
        progress=not args.quiet,
        client=args.client,
        as_of=as_of,
        sink=whatif.apply if whatif is not None else None,
    )
    seconds = time.monotonic() - started
    print(
        f"entries={replay.entries} clients={len(replay.accounts)} seconds={seconds:.2f} "
        f"rate={replay.entries / max(seconds, 1e-9):,.0f}/s",
        file=sys.stderr,
    )
    if whatif is not None:
        print(CSV_HEADER)
        for c in sorted(whatif.clients.values(), key=lambda c: c.client_id):
            print(csv_row(c))
        print(csv_row(whatif.totals()))
    else:
        print("client_id,balance,credited,charged,refunded,delivered,seq")
        for a in sorted(replay.accounts.values(), key=lambda a: a.client_id):
            print(
                f"{a.client_id},{a.balance},{a.tokens_credited},{a.tokens_charged},"
                f"{a.tokens_refunded},{a.memes_delivered},{a.seq}"
            )
    problems = replay.violations + replay.conservation()
    for problem in problems:
        print(f"VIOLATION {problem}", file=sys.stderr)
    return 1 if problems else 0
