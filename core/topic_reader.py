"""Read a topic (every partition, or the one a key is on) from its start to its current end,
committed only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from core.batching import take_batch
from core.settings import Settings
from core.topics import key_partition


def position_of(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed or delivered record without error:
    librdkafka sets all three on those; its types leave them optional for the rest."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def partitions_to_read(
    consumer: Consumer, topic: str, key: bytes | None, timeout_s: float
) -> list[int]:
    """The partitions of ``topic``, or with ``key`` only the one its records are on
    (``key_partition``)."""
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
    if metadata.error is not None:
        raise KafkaException(metadata.error)
    numbers = list(metadata.partitions)
    return numbers if key is None else [key_partition(key, len(numbers))]


def read_topic(
    settings: Settings,
    topic: str,
    timeout_s: float = 60.0,
    *,
    key: bytes | None = None,
    start: Mapping[int, int] | None = None,
) -> Iterator[Message]:
    """Yield every committed message of ``topic``; stops when each partition is at its end.

    With ``key``, only the partition that key's records are on (``key_partition``), so
    other keys' records of that partition come too: the caller filters them. With
    ``start``, a partition it names is read from that offset on, not from the beginning."""
    consumer = Consumer(
        {
            **settings.kafka_common(),
            "group.id": f"maas-reader-{uuid.uuid4().hex}",  # never commits; a name is required
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        partitions = [
            TopicPartition(topic, p, (start or {}).get(p, OFFSET_BEGINNING))
            for p in partitions_to_read(consumer, topic, key, timeout_s)
        ]
        consumer.assign(partitions)
        remaining = {tp.partition for tp in partitions}
        while remaining:
            # Not consume(n, timeout): it waits out the timeout unless n arrive, a second
            # per call added to every audit read and replay of a small log.
            for msg in take_batch(consumer, 10_000, 1.0):
                error = msg.error()
                if error is None:
                    yield msg
                elif error.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(msg.partition())
                else:
                    raise KafkaException(error)
    finally:
        consumer.close()
