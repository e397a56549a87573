"""Group commit for consumers: wait for the first message, then take what has arrived.

``Consumer.consume(n, timeout)`` waits until it has ``n`` messages *or* the timeout
passes, so under light load every batch would cost the whole timeout in latency. Waiting
only for the first message and then draining the local queue without waiting gives
batches that grow with load by themselves, while a lone request is not held back.
"""

from __future__ import annotations

from confluent_kafka import Consumer, Message


def take_batch(consumer: Consumer, max_messages: int, wait_s: float) -> list[Message]:
    first = consumer.poll(wait_s)
    if first is None:
        return []
    return [first, *consumer.consume(max_messages - 1, 0)] if max_messages > 1 else [first]
