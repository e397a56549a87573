"""A batch taken across a rebalance: only what this instance owns is decided, and only
what it decided moves an offset (issue 8, "offsets of undecided messages committed
after a revoke")."""

from __future__ import annotations

from confluent_kafka import Message

from processors.ledger.ownership import offsets_after, owned_inputs

REQUESTS = "eu.requests"
PURCHASES = "eu.purchases"


def message(topic: str, partition: int, offset: int) -> Message:
    return Message(topic=topic, partition=partition, offset=offset, key=b"c", value=b"{}")


def test_a_partition_revoked_inside_consume_is_neither_decided_nor_committed() -> None:
    # Partition 1 was revoked by a rebalance that ran inside consume(), after its first
    # message was polled: it is no longer among the positions.
    positions = {(REQUESTS, 0): 10, (PURCHASES, 0): 3}
    batch = [message(REQUESTS, 1, 7), message(REQUESTS, 0, 10), message(PURCHASES, 1, 2)]

    inputs = owned_inputs(batch, positions)
    offsets = offsets_after(positions, inputs)

    assert [(i.topic, i.partition, i.offset) for i in inputs] == [(REQUESTS, 0, 10)]
    assert offsets == {(REQUESTS, 0): 11, (PURCHASES, 0): 3}


def test_messages_before_the_position_were_decided_already() -> None:
    # Revoked and assigned again within one batch: the position is the committed offset.
    positions = {(REQUESTS, 0): 10}
    batch = [message(REQUESTS, 0, 8), message(REQUESTS, 0, 9), message(REQUESTS, 0, 10)]

    inputs = owned_inputs(batch, positions)

    assert [i.offset for i in inputs] == [10]
    assert offsets_after(positions, inputs) == {(REQUESTS, 0): 11}


def test_every_owned_partition_is_sent_even_with_nothing_consumed() -> None:
    """The fence: a transaction of timer refunds only still carries every position."""
    positions = {(REQUESTS, 0): 10, (PURCHASES, 0): 3}

    assert offsets_after(positions, owned_inputs([], positions)) == positions
