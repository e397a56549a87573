"""Answered outcomes held back, to be settled together.

Nobody waits for the ledger to settle a meme made in time: its generator has told the
client already (the outcome carries ``ANSWERED_HEADER``), and the ledger only records
the delivery. Yet each transaction writes one ledger and one changelog record batch to
every partition it touches, and the broker's cost is per partition written (a produce,
its verification, a commit marker: docs/capacity.md). Outcomes settled one by one, each
riding with whatever request came next, touched one or two more partitions per
transaction; gathered for ``within_s`` they touch each of the instance's partitions once
per window. With 500 ms: 8% fewer broker requests per meme at 100 requests/s, 13%
and a fifth fewer transactions at 20/s (docs/performance.md, thirteenth session). Any
other outcome (a failure, a meme made late) has a client waiting for the ledger's
answer: it is decided in the next batch.

What holding must not change:

- *Order.* Within a partition of the outcomes topic, held outcomes are decided in offset
  order, before any later outcome of that partition. Between topics Kafka gives no order
  (a consumer may hand over a request before an older outcome), so the fold is already
  correct for any interleaving of requests and outcomes; holding only widens it.
- *Nothing is marked consumed before it is decided.* A held outcome is not decided yet,
  so its partition's position, and the offset each transaction commits, stay before it.
  A killed or stopped processor loses nothing: its successor reads the outcome again
  from the committed offset.
- *Expiry.* A held outcome counts as unread for the deadline watch (``_expirable`` sees
  only decided offsets), and a due deadline takes the held outcomes into its
  transaction at once, so a meme made in time is delivered, not refunded.
- *Rebalance.* A revoked partition's held outcomes are dropped with its position: its
  next owner, perhaps this instance again, reads them from the committed offset.
- *Reads see them.* An input that reads a client's state (``GET /v1/me``,
  ``GET /v1/requests/{id}``, an erasure; the API marks it with ``READS_HEADER``) takes
  the held outcomes into its own transaction, before it. Only a retry with the same
  ``Idempotency-Key`` inside the window waits for the settlement.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from confluent_kafka import Message

from core.topic_reader import position_of
from core.topics import ANSWERED_HEADER, READS_HEADER


class HeldOutcomes:
    def __init__(
        self,
        outcomes_topic: str,
        within_s: float,
        max_held: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outcomes_topic = outcomes_topic
        self.within_s = within_s
        self.max_held = max_held
        self.clock = clock
        self.held: list[Message] = []
        self.since = 0.0  # when the oldest held outcome was held, by ``clock``

    def wait_s(self, idle_wait_s: float) -> float:
        """How long the next batch may wait for a first message."""
        if not self.held:
            return idle_wait_s
        return max(0.0, min(idle_wait_s, self.since + self.within_s - self.clock()))

    def take(self, messages: list[Message], *, deadlines_due: bool) -> list[Message]:
        """The batch to decide now: ``messages`` but their answered outcomes, which are
        held; or every held outcome, then the outcomes of ``messages``, then the rest,
        once the oldest has waited ``within_s``, ``max_held`` wait, a deadline is due, an
        outcome comes that a client waits for (which must not pass the held ones of its
        partition), or an input that reads a client's state (``READS_HEADER``: it must
        see them settled)."""
        outcomes: list[Message] = []
        rest: list[Message] = []
        answered, reads = 0, False
        for message in messages:  # one pass: this runs on every batch of the loop
            if self._is_outcome(message):
                outcomes.append(message)
                answered += _has_header(message, ANSWERED_HEADER)
            else:
                rest.append(message)
                reads = reads or _has_header(message, READS_HEADER)
        if answered and not self.held:
            self.since = self.clock()
        someone_waits = answered < len(outcomes) or reads
        if deadlines_due or someone_waits or self._overdue(len(self.held) + answered):
            # Outcomes before the rest (each topic keeps its order; between topics there
            # is none to keep), so that a read in this batch sees them.
            batch, self.held = [*self.held, *outcomes, *rest], []
            return batch
        self.held.extend(outcomes)  # here every outcome is answered
        return rest

    def drop(self, partitions: Iterable[tuple[str, int]]) -> None:
        gone = set(partitions)
        self.held = [m for m in self.held if position_of(m)[:2] not in gone]

    def _is_outcome(self, message: Message) -> bool:
        return message.error() is None and message.topic() == self.outcomes_topic

    def _overdue(self, held: int) -> bool:
        return held > 0 and (held >= self.max_held or self.clock() - self.since >= self.within_s)


def _has_header(message: Message, name: str) -> bool:
    return any(header[0] == name for header in message.headers() or ())
