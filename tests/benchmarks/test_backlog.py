"""What the benchmarks count as a group's backlog (``benchmarks/common.py``, ``unread``).

Scenario: two transactional producers (as the two ledger processors) each commit one
record to the same partition, so the partition ends with their two commit markers; a
consumer group reads both records and commits. A third record is then committed.

We expect: the end of the log is two offsets past the group's committed offset, yet
nothing is left to read (markers are not records); the third record counts as one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from common import end_probe, unread

pytestmark = [pytest.mark.benchmark, pytest.mark.kafka]

# ``commit_transaction`` returns once the coordinator has logged the commit; it writes
# the markers after, and a read_committed consumer reads a record only once its marker is
# written. Until then it reaches the end of the partition before the record.
TIMEOUT_S = 30.0


def test_commit_markers_at_the_end_are_no_backlog(kafka: Any, unique: str) -> None:
    topic = f"{unique}.approved"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producers = [
        Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": f"{unique}-{n}"})
        for n in range(2)
    ]
    for producer in producers:
        producer.init_transactions(30)
        producer.begin_transaction()
    for n, producer in enumerate(producers):  # both records before either marker
        producer.produce(topic, value=f"approval {n}".encode(), partition=0)
        producer.flush(30)
    for producer in producers:
        producer.commit_transaction(30)

    group = end_probe(kafka.bootstrap, f"{unique}-group")
    group.assign([TopicPartition(topic, 0, 0)])
    read = _records(group, 2)
    assert [m.value() for m in read] == [b"approval 0", b"approval 1"]
    committed = read[-1].offset() + 1
    group.commit(offsets=[TopicPartition(topic, 0, committed)], asynchronous=False)
    group.close()

    counter = end_probe(kafka.bootstrap, f"{unique}-probe")
    try:
        _, end = counter.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        assert end - committed == 2  # the two markers
        assert unread(counter, [TopicPartition(topic, 0, committed)]) == 0

        producers[0].begin_transaction()
        producers[0].produce(topic, value=b"approval 2", partition=0)
        producers[0].commit_transaction(30)
        give_up = time.monotonic() + TIMEOUT_S
        while (count := unread(counter, [TopicPartition(topic, 0, committed)])) == 0:
            if time.monotonic() > give_up:
                break
            time.sleep(0.1)
        assert count == 1
    finally:
        counter.close()


def _records(consumer: Any, count: int) -> list[Any]:
    """The next ``count`` records, however many ends of partition come first."""
    records: list[Any] = []
    give_up = time.monotonic() + TIMEOUT_S
    while len(records) < count and time.monotonic() < give_up:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            records.append(message)
    return records
