"""Reading Kafka: every committed record of a region's topics, from offset 0 to the end,
once the ledger has decided every input in its log."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from tests.jepsen.checker.model import Record, Topics, topics_of

READ_TIMEOUT_S = 120.0
# How long the ledger may take to decide what its inputs hold when the check begins: it
# settles an answered meme up to half a second after the client had it (settle_within_ms).
AT_REST_TIMEOUT_S = 30.0


def read_records(bootstrap: str, region: str, timeout_s: float = READ_TIMEOUT_S) -> list[Record]:
    """Every committed record of the region's topics, from offset 0 to the end offset
    each partition had when the read began (later records are left out, so that the
    topics are cut at nearly one moment). The read begins once the ledger is at rest
    (``wait_ledger_at_rest``)."""
    topics = topics_of(region)
    wait_ledger_at_rest(bootstrap, region, topics, AT_REST_TIMEOUT_S)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"jepsen-checker-{uuid.uuid4().hex}",  # required; never commits
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,  # reads to the end and stops: no long polls
        }
    )
    try:
        ends = _end_offsets(consumer, topics, timeout_s)
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        return _consume_until(consumer, ends, time.monotonic() + timeout_s)
    finally:
        consumer.close()


def _end_offsets(
    consumer: Consumer, topics: Topics, timeout_s: float
) -> dict[tuple[str, int], int]:
    # Listing every topic never creates one; the checkpoints topic is optional.
    metadata = consumer.list_topics(timeout=timeout_s).topics
    missing = [t for t in topics[:4] if t not in metadata]
    if missing:
        raise RuntimeError(f"topics not found: {missing}")
    ends = {}
    for topic in topics:
        if topic not in metadata:
            continue
        for partition in metadata[topic].partitions:
            tp = TopicPartition(topic, partition)
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            if high > low:
                ends[topic, partition] = high
    return ends


def _consume_until(
    consumer: Consumer, ends: dict[tuple[str, int], int], deadline: float
) -> list[Record]:
    records: list[Record] = []
    remaining = set(ends)
    while remaining:
        if time.monotonic() > deadline:
            raise TimeoutError(f"partitions not read to their end: {sorted(remaining)}")
        # The first record within a second, then what has arrived: consume(n, 1.0) alone
        # would wait out its second unless n records came.
        first = consumer.poll(1.0)
        batch = [] if first is None else [first, *consumer.consume(10_000, 0)]
        for msg in batch:
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset()
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
                # At the end; under read_committed an open transaction ends the read
                # early (its last stable offset), so wait until the end is reached.
                if offset is not None and offset >= ends[topic, partition]:
                    remaining.discard((topic, partition))
                continue
            assert offset is not None  # a record without error has its offset
            if offset < ends[topic, partition]:
                records.append(Record(topic, partition, offset, msg.key(), msg.value()))
            if offset + 1 >= ends[topic, partition]:
                remaining.discard((topic, partition))
    return records


def wait_ledger_at_rest(bootstrap: str, region: str, topics: Topics, timeout_s: float) -> None:
    """Wait until the ledger's group (``<region>.ledger``) has committed every partition of
    its inputs (requests, purchases, outcomes) to its end: every input in the log is then
    decided. Checked before the cut, so that a meme answered a moment ago is not taken
    for one the ledger never settled. If it does not come to rest in ``timeout_s`` (a
    processor down), the check goes on and shows what is open."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{region}.ledger",  # to read its commits; never joins, never commits
            "enable.auto.commit": False,
        }
    )
    try:
        inputs = [TopicPartition(t, p) for t, p in _end_offsets(consumer, topics, timeout_s)]
        inputs = [
            tp for tp in inputs if tp.topic in (topics.requests, topics.purchases, topics.outcomes)
        ]
        give_up = time.monotonic() + timeout_s
        while time.monotonic() < give_up:
            committed = consumer.committed(inputs, timeout=timeout_s)
            behind = [
                tp
                for tp in committed
                if tp.offset < consumer.get_watermark_offsets(tp, timeout=timeout_s)[1]
            ]
            if not behind:
                return
            time.sleep(0.2)  # the ledger's next transaction
    finally:
        consumer.close()
