"""The API's key table on its own, against a real broker: when is it loaded?

The table answers an unknown key "not ready" until it has read every partition of
``<region>.clients`` to its end once, so "loaded" must neither come before a partition's
records are in (a key would be refused as wrong) nor wait for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from api.keys import EMPTY_PROBE_S, KeyTable, key_hash
from core.admin import ensure_topics
from core.settings import Settings
from core.topics import Topics
from schemas.events import AccountOpened, dump
from tests.stack import process_state, wait_for_state

pytestmark = pytest.mark.kafka

# An empty partition's end-of-partition event took two fetches held for librdkafka's
# fetch.wait.max.ms of 500 ms: 1.1 s. The watermarks answer in milliseconds.
EMPTY_LOAD_LIMIT_S = 0.9


@pytest.fixture
def settings(kafka, unique: str) -> Settings:
    settings = Settings(region=f"r{unique[:20]}".lower(), bootstrap_servers=kafka.bootstrap)
    ensure_topics(settings)
    wait_for_leaders(Topics(settings.region).clients, settings.bootstrap_servers)
    return settings


def wait_for_leaders(topic: str, bootstrap: str) -> None:
    """As an API starting after ``maas topics create``: a topic created a moment ago
    answers "not leader" for a while, and the table then waits for its fetches."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused"})
    try:
        deadline = time.monotonic() + 10.0
        for partition in consumer.list_topics(topic, timeout=10.0).topics[topic].partitions:
            while True:
                try:
                    consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=2.0)
                    break
                except KafkaException:
                    assert time.monotonic() < deadline, f"{topic} [{partition}] has no leader"
                    time.sleep(0.05)
    finally:
        consumer.close()


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[KeyTable]:
    loop = asyncio.new_event_loop()  # the table only posts wake-ups to it
    table = KeyTable(settings)
    try:
        table.start(loop)
        yield table
    finally:
        table.stop()
        loop.close()


def test_an_empty_table_is_loaded_without_waiting_for_a_fetch(settings: Settings) -> None:
    began = time.monotonic()
    with running(settings) as table:
        assert table.wait_loaded(10.0)
        assert time.monotonic() - began < EMPTY_LOAD_LIMIT_S
        assert len(table) == 0


def test_a_table_is_loaded_only_once_every_written_partition_is_read(settings: Settings) -> None:
    """Two partitions hold a client each, the other four nothing: loaded means both
    clients known, never just the empty partitions' end."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for partition, client_id in ((0, "c-first"), (3, "c-second")):
        record = AccountOpened(
            event_id=f"{client_id}-0",
            client_id=client_id,
            region=settings.region,
            occurred_at_ms=1,
            seq=1,
            balance_after=0,
            api_key_sha256=key_hash(f"mk_{client_id}"),
        )
        producer.produce(
            Topics(settings.region).clients, key=client_id, value=dump(record), partition=partition
        )
    assert producer.flush(10) == 0
    with running(settings) as table:
        assert table.wait_loaded(10.0)
        assert table.client_for("mk_c-first") == "c-first"
        assert table.client_for("mk_c-second") == "c-second"


def test_a_broker_that_does_not_answer_holds_the_probe_up_once(kafka, settings: Settings) -> None:
    """The watermarks of all partitions are asked within ``EMPTY_PROBE_S`` together: a
    leader that does not answer (paused here) must not cost it once per partition it
    leads (2 s each, 12 s for six, before the bound)."""
    if kafka.broker is None:
        pytest.skip("the broker is not ours to pause")
    table = KeyTable(settings)
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "probe"})
    try:
        partitions = set(
            consumer.list_topics(table.topic, timeout=10.0).topics[table.topic].partitions
        )
        assert table.empty_partitions(consumer, partitions) == partitions  # a new topic
        pid = kafka.broker.pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            # Asked once every thread has stopped: in one full run all six were answered
            # at once, cause unknown; the state in the messages tells next time.
            assert wait_for_state(pid, "T", 5.0), f"broker {pid} not stopped: {process_state(pid)}"
            began = time.monotonic()
            assert table.empty_partitions(consumer, partitions) == set(), process_state(pid)
            assert time.monotonic() - began < EMPTY_PROBE_S + 0.5
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        consumer.close()
