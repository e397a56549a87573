"""Where a decision's events go: the records the ledger processor produces for it.

Kept apart from the commit protocol so that whatever produces a decision's outputs
(the processor inside its transaction, the at-least-once baseline of the processor
benchmark) routes them the same way. State writes to the changelog are not here: they
also feed the processor's overlay (see ``ledger.state.record_writes``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import NamedTuple

from core.topics import CLIENT_PARTITION_HEADER, Topics, key_partition
from ledger.fold import Decision
from schemas.events import AccountOpened, ApiKeyRotated, MemeApproved, dump

log = logging.getLogger("maas.ledger")


class Output(NamedTuple):
    topic: str
    partition: int
    key: bytes
    value: bytes
    headers: dict[str, str | bytes | None] | None = None


PLACE_CELL_DECIMALS = 1  # a standard meme's place, for routing: a 0.1 degree cell (~11 km)


def work_partition(approved: MemeApproved, partitions: int) -> int:
    """The partition of an approval in its pool's topic.

    An AI meme is drawn for its request id and never cached: the request id chooses, so
    a client with many AI memes keeps every generator of the pool busy. A standard meme
    is a function of its query and place, and each generator process keeps the memes it
    made (``memes.render``): the query and the place's cell choose, so each process makes
    and keeps its own share of the popular memes instead of every process all of them.
    ``key_partition`` (CRC-32): the same in every process and every retry of a
    transaction."""
    if approved.kind == "ai":
        key = approved.request_id
    else:
        lat = round(approved.lat, PLACE_CELL_DECIMALS)
        lon = round(approved.lon, PLACE_CELL_DECIMALS)
        key = f"{approved.query}\0{lat}\0{lon}"
    return key_partition(key.encode(), partitions)


def decision_outputs(
    topics: Topics, partition: int, decision: Decision, partitions: int, reply_partitions: int
) -> Iterator[Output]:
    """Ledger entries (and the key's, ``AccountOpened`` and ``ApiKeyRotated``, to the
    clients table) on the input's
    partition, approved work to its pool's topic (``work_partition``, naming the input's
    partition for the outcome), replies to the partition each waiter reads."""
    for entry in decision.entries:
        key = entry.client_id.encode()
        value = dump(entry)
        yield Output(topics.ledger, partition, key, value)
        if isinstance(entry, AccountOpened | ApiKeyRotated):
            yield Output(topics.clients, partition, key, value)
    if decision.approved is not None:
        approved = decision.approved
        yield Output(
            topics.approved(approved.kind),
            work_partition(approved, partitions),
            approved.client_id.encode(),
            dump(approved),
            {CLIENT_PARTITION_HEADER: str(partition)},
        )
    for reply_to, reply in decision.replies:
        if reply_to >= reply_partitions:
            log.error("reply_to out of range reply_to=%d", reply_to)
            continue
        yield Output(topics.replies, reply_to, reply.correlation_id.encode(), dump(reply))
