"""Group commit for consumers: wait for the first message, then take what has arrived.

``Consumer.consume(n, timeout)`` waits until it has ``n`` messages *or* the timeout
passes, so under light load every batch would cost the whole timeout in latency. Waiting
only for the first message and then draining the local queue without waiting gives
batches that grow with load by themselves, while a lone request is not held back.

``gather_until`` spaces the batches of a caller whose per-batch cost is high (a ledger
transaction): while that instant is ahead, the batch keeps taking what arrives, so at
load batches are at least that far apart and larger, while a lone message after a quiet
spell is taken at once (the instant has passed).

``IDLE_WAIT_S`` is how long a thread with nothing else to wait for blocks in a poll: a
record wakes it at once, so the bound only says how late it sees a stop flag. Each idle
wake-up costs a process ~70 us of CPU; polls of 20-100 ms made the service's Python
processes a third of its idle cost (docs/performance.md, idle).
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Message

IDLE_WAIT_S = 0.5


def take_batch(
    consumer: Consumer, max_messages: int, wait_s: float, *, gather_until: float = 0.0
) -> list[Message]:
    """At most ``max_messages``: the first within ``wait_s``, then what has arrived, and
    what arrives until ``gather_until`` (a ``time.monotonic()`` instant)."""
    first = consumer.poll(wait_s)
    if first is None:
        return []
    if max_messages == 1:
        return [first]
    gather_s = max(0.0, gather_until - time.monotonic())
    return [first, *consumer.consume(max_messages - 1, gather_s)]
