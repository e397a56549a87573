"""Outcomes held back to ride in the next transaction that decides requests.

Nobody waits for the ledger to settle a meme made in time: its generator has told the
client already, and the ledger only records the delivery. Yet an outcome comes ~10-20
ms after its request's transaction, often alone, and a transaction costs the broker
about a dozen requests whatever it holds (docs/capacity.md). So an outcome consumed
with no request beside it waits, in memory, for the next batch with a request in it,
or at most ``within_s``: at 100 requests/s that made a sixth fewer transactions
(docs/performance.md, ninth session).

What holding must not change:

- *Order.* Held outcomes go first in the batch that takes them, before anything
  consumed after them, so each partition is still decided in offset order.
- *Nothing is marked consumed before it is decided.* A held outcome is not decided yet,
  so its partition's position, and the offset its next transaction commits, stay
  before it. A killed or stopped processor loses nothing: its successor reads the
  outcome again from the committed offset.
- *Expiry.* A held outcome counts as unread for the deadline watch (``_expirable`` sees
  only decided offsets), and a due deadline takes the held outcomes into its
  transaction at once, so a meme made in time is delivered, not refunded.
- *Rebalance.* A revoked partition's held outcomes are dropped with its position: its
  next owner, perhaps this instance again, reads them from the committed offset.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from confluent_kafka import Message

from core.topic_reader import position_of


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
        """The batch to decide now: the held outcomes first, then ``messages``; or none
        while everything consumed is outcomes that may wait longer."""
        if not deadlines_due and all(self._is_outcome(m) for m in messages):
            if messages and not self.held:
                self.since = self.clock()
            self.held.extend(messages)
            if not self._overdue():
                return []
            messages = []
        batch, self.held = [*self.held, *messages], []
        return batch

    def drop(self, partitions: Iterable[tuple[str, int]]) -> None:
        gone = set(partitions)
        self.held = [m for m in self.held if position_of(m)[:2] not in gone]

    def _is_outcome(self, message: Message) -> bool:
        return message.error() is None and message.topic() == self.outcomes_topic

    def _overdue(self) -> bool:
        return bool(self.held) and (
            len(self.held) >= self.max_held or self.clock() - self.since >= self.within_s
        )
