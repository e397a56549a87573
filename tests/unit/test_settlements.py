"""Answered outcomes held to be settled together: what is decided, when, and in which
order (processors/ledger/settlements.py)."""

from __future__ import annotations

from confluent_kafka import KafkaError, Message

from core.topics import ANSWERED_HEADER, READS_HEADER
from processors.ledger.settlements import HeldOutcomes

OUTCOMES = "eu.outcomes"
REQUESTS = "eu.requests"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def message(topic: str, partition: int, offset: int) -> Message:
    return Message(topic=topic, partition=partition, offset=offset, key=b"c", value=b"{}")


def answered(partition: int, offset: int) -> Message:
    """An outcome whose client its generator answered."""
    return Message(
        topic=OUTCOMES,
        partition=partition,
        offset=offset,
        key=b"c",
        value=b"{}",
        headers=[(ANSWERED_HEADER, b"1")],
    )


def positions(batch: list[Message]) -> list[tuple[str | None, int | None, int | None]]:
    return [(m.topic(), m.partition(), m.offset()) for m in batch]


def held(within_s: float = 0.05, max_held: int = 500) -> tuple[HeldOutcomes, Clock]:
    clock = Clock()
    return HeldOutcomes(OUTCOMES, within_s, max_held, clock), clock


def test_answered_outcomes_are_held_while_requests_go_and_then_go_together_first() -> None:
    outcomes, clock = held(within_s=0.5)
    assert outcomes.take([answered(0, 7)], deadlines_due=False) == []
    clock.now += 0.2
    batch = outcomes.take([message(REQUESTS, 0, 40), answered(1, 3)], deadlines_due=False)
    assert positions(batch) == [(REQUESTS, 0, 40)]  # the request is not held back
    clock.now += 0.2
    assert outcomes.take([answered(0, 8)], deadlines_due=False) == []

    clock.now += 0.1  # the oldest has waited within_s
    batch = outcomes.take([message(REQUESTS, 0, 41)], deadlines_due=False)

    assert positions(batch) == [
        (OUTCOMES, 0, 7),
        (OUTCOMES, 1, 3),
        (OUTCOMES, 0, 8),
        (REQUESTS, 0, 41),
    ]
    assert outcomes.take([], deadlines_due=False) == []  # nothing is decided twice


def test_an_outcome_a_client_waits_for_goes_at_once_after_the_held_ones() -> None:
    # A failure (or a meme made late) is answered by the ledger: it is not held, and it
    # must not pass the held outcomes of its partition (they are decided in offset order).
    outcomes, _ = held()
    outcomes.take([answered(2, 5)], deadlines_due=False)

    batch = outcomes.take([message(OUTCOMES, 2, 6), answered(2, 7)], deadlines_due=False)

    assert positions(batch) == [(OUTCOMES, 2, 5), (OUTCOMES, 2, 6), (OUTCOMES, 2, 7)]


def test_an_outcome_waits_at_most_within_s() -> None:
    outcomes, clock = held(within_s=0.5)
    outcomes.take([answered(0, 7)], deadlines_due=False)
    clock.now += 0.25
    assert outcomes.wait_s(0.125) == 0.125  # the idle wait, when it is shorter
    assert outcomes.wait_s(1.0) == 0.25  # what is left of within_s

    clock.now += 0.25
    assert outcomes.wait_s(1.0) == 0.0
    assert positions(outcomes.take([], deadlines_due=False)) == [(OUTCOMES, 0, 7)]
    assert outcomes.wait_s(1.0) == 1.0


def test_a_due_deadline_takes_the_held_outcomes_at_once() -> None:
    # The deadline watch refunds only once the outcomes are decided: a meme made in time
    # and held here must be delivered in that very transaction.
    outcomes, _ = held()
    outcomes.take([answered(2, 5)], deadlines_due=False)

    batch = outcomes.take([answered(2, 6)], deadlines_due=True)

    assert positions(batch) == [(OUTCOMES, 2, 5), (OUTCOMES, 2, 6)]


def test_at_most_max_held_wait() -> None:
    outcomes, _ = held(max_held=3)
    assert outcomes.take([answered(0, 1), answered(0, 2)], deadlines_due=False) == []

    batch = outcomes.take([answered(0, 3)], deadlines_due=False)

    assert [m.offset() for m in batch] == [1, 2, 3]


def test_with_no_wait_nothing_is_held() -> None:
    outcomes, _ = held(within_s=0)
    assert positions(outcomes.take([answered(0, 1)], deadlines_due=False)) == [(OUTCOMES, 0, 1)]


def test_a_consume_error_is_not_held() -> None:
    outcomes, _ = held()
    error = Message(topic=OUTCOMES, partition=0, error=KafkaError(KafkaError._TRANSPORT))

    assert outcomes.take([error], deadlines_due=False) == [error]


def test_a_revoked_partition_s_outcomes_are_dropped_for_its_next_owner() -> None:
    outcomes, _ = held()
    outcomes.take([answered(0, 7), answered(1, 3), answered(0, 8)], deadlines_due=False)

    outcomes.drop([(OUTCOMES, 0), (REQUESTS, 0)])

    assert positions(outcomes.take([], deadlines_due=True)) == [(OUTCOMES, 1, 3)]


def test_an_input_that_reads_state_takes_the_held_outcomes_before_it() -> None:
    # GET /v1/me right after a 200 must see that meme delivered: the API marks the query.
    outcomes, _ = held(within_s=0.5)
    outcomes.take([answered(0, 7)], deadlines_due=False)
    query = Message(
        topic=REQUESTS,
        partition=0,
        offset=41,
        key=b"c",
        value=b"{}",
        headers=[(READS_HEADER, b"1")],
    )

    batch = outcomes.take([message(REQUESTS, 0, 40), query, answered(0, 8)], deadlines_due=False)

    assert positions(batch) == [  # outcomes first: the read sees the one beside it too
        (OUTCOMES, 0, 7),
        (OUTCOMES, 0, 8),
        (REQUESTS, 0, 40),
        (REQUESTS, 0, 41),
    ]
