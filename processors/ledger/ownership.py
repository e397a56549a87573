"""Which consumed messages a transaction may decide, and the offsets it commits.

A rebalance callback runs inside ``consume``, so a batch can hold messages of a partition
revoked while the batch was taken (its next owner reads them from the committed offset),
or messages before a partition's position (revoked and assigned again within one batch:
already decided). Neither is decided, and neither moves an offset: an input that was
never decided must never be marked consumed (``docs/architecture.md``, "every
transaction is fenced").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from confluent_kafka import Message

from core.topic_reader import position_of

Partition = tuple[str, int]  # (topic, partition)


class Input(NamedTuple):
    message: Message
    topic: str
    partition: int
    offset: int


def owned_inputs(messages: Iterable[Message], positions: Mapping[Partition, int]) -> list[Input]:
    """The messages (consumed without error) of owned partitions, at or past the position."""
    inputs = []
    for msg in messages:
        topic, partition, offset = position_of(msg)
        position = positions.get((topic, partition))
        if position is not None and position <= offset:
            inputs.append(Input(msg, topic, partition, offset))
    return inputs


def offsets_after(
    positions: Mapping[Partition, int], inputs: Iterable[Input]
) -> dict[Partition, int]:
    """The next offset of every owned partition once ``inputs`` are decided: sent with the
    group metadata in every transaction, for every owned partition (the fence)."""
    offsets = dict(positions)
    for item in inputs:
        offsets[item.topic, item.partition] = item.offset + 1
    return offsets
