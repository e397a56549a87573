"""What the benchmarks count as a group's backlog (``benchmarks/common.py``, ``unread``).

Scenario: two transactional producers (as the two ledger processors) each commit one
record to the same partition, so the partition ends with their two commit markers; a
consumer group reads both records and commits. A third record is then committed.

We expect: the end of the log is two offsets past the group's committed offset, yet
nothing is left to read (markers are not records); the third record counts as one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from common import end_probe, unread

pytestmark = [pytest.mark.benchmark, pytest.mark.kafka]


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
    read = [group.poll(10) for _ in range(2)]
    assert [m.value() for m in read if m is not None] == [b"approval 0", b"approval 1"]
    last = read[-1].offset() if read[-1] is not None else None
    assert last is not None
    committed = last + 1
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
        assert unread(counter, [TopicPartition(topic, 0, committed)]) == 1
    finally:
        counter.close()
