"""The API's bridge to Kafka on its own, against a real broker: the test plays the ledger.

What a call answers depends on two reports that reach the loop from two threads: the
reply (the reply consumer) and the delivery report (librdkafka's), which wakes the loop
only when the call must act on it. Each case below ends a call by one of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

import api.bridge
from api.bridge import REPLY_STALL_S, KafkaBridge
from api.errors import KafkaUnavailable
from api.metrics import Metrics
from core.admin import ensure_topics
from core.batching import take_batch
from core.settings import Settings
from core.topics import Topics
from schemas.events import AccountQueried, Reply, dump

pytestmark = pytest.mark.kafka


@pytest.fixture
def settings(kafka, unique: str) -> Settings:
    settings = Settings(
        region=f"r{unique[:20]}".lower(), bootstrap_servers=kafka.bootstrap, api_instance=3
    )
    ensure_topics(settings)
    return settings


T = TypeVar("T")


def with_bridge(settings: Settings, body: Callable[[KafkaBridge], Awaitable[T]]) -> T:
    """Run ``body`` on an event loop with a started bridge, as the API process does."""

    async def run() -> T:
        bridge = KafkaBridge(settings, Metrics())
        bridge.start(asyncio.get_running_loop())
        try:
            assert await asyncio.to_thread(bridge.wait_positioned, 30)
            return await body(bridge)
        finally:
            await asyncio.to_thread(bridge.stop)

    return asyncio.run(run())


def query(bridge: KafkaBridge) -> AccountQueried:
    return AccountQueried(**bridge.envelope("client-1"))


def read_one(settings: Settings, topic: str) -> AccountQueried:
    consumer = Consumer(
        {
            **settings.kafka_common(),
            "group.id": f"{settings.region}.test",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                return AccountQueried.model_validate_json(message.value() or b"")
        raise AssertionError(f"nothing appended to {topic}")
    finally:
        consumer.close()


def test_the_reply_ends_the_call(settings: Settings) -> None:
    """Scenario: a call appends a query; the ledger (here, the test) reads it and answers
    on the partition it names.

    We expect: the call returns that reply, well before its deadline."""

    async def body(bridge: KafkaBridge) -> None:
        event = query(bridge)
        call = asyncio.create_task(bridge.call(bridge.topics.requests, event))
        appended = await asyncio.to_thread(read_one, settings, bridge.topics.requests)
        assert appended.event_id == event.event_id and appended.reply_to == 3
        producer = Producer(settings.kafka_common())
        reply = Reply(correlation_id=event.event_id, outcome="not_found")
        producer.produce(bridge.topics.replies, dump(reply), partition=appended.reply_to)
        producer.flush(10)
        assert await asyncio.wait_for(call, 10) == reply

    with_bridge(settings, body)


def test_a_reply_consumer_that_stops_fetching_is_rebuilt_and_the_call_answered(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scenario: the reply consumer stops fetching while a call waits (its first consumer
    is paused, by its own thread; after a broker restart librdkafka can leave an assigned
    partition's consumer so until it is recreated, #5153), and the ledger (the test)
    answers; the deadline is 30 s away.

    We expect: the reply within a few seconds: the consumer finds committed replies past
    its position at two looks, reads nothing, and is rebuilt there."""
    settings = settings.model_copy(update={"request_deadline_ms": 30_000})
    stalled: list[Consumer] = []

    def first_consumer_stalls(consumer: Consumer, *args: Any, **kwargs: Any) -> list[Message]:
        if not stalled:
            consumer.pause(consumer.assignment())
            stalled.append(consumer)
        return take_batch(consumer, *args, **kwargs)

    monkeypatch.setattr(api.bridge, "take_batch", first_consumer_stalls)

    async def body(bridge: KafkaBridge) -> float:
        event = query(bridge)
        call = asyncio.create_task(bridge.call(bridge.topics.requests, event))
        appended = await asyncio.to_thread(read_one, settings, bridge.topics.requests)
        producer = Producer(settings.kafka_common())
        reply = Reply(correlation_id=event.event_id, outcome="not_found")
        producer.produce(bridge.topics.replies, dump(reply), partition=appended.reply_to)
        producer.flush(10)
        answered = time.monotonic()
        assert await asyncio.wait_for(call, 20) == reply
        return time.monotonic() - answered

    assert with_bridge(settings, body) < 3 * REPLY_STALL_S + 2
    assert len(stalled) == 1


def test_no_reply_by_the_deadline_is_none_once_the_event_is_in_the_log(
    settings: Settings,
) -> None:
    """Scenario: a call with a 1 s deadline appends a query that nobody answers.

    We expect: ``None`` (the routes' 504) after the deadline, and the event is in the
    log: the delivery report came first, even though it never woke the loop."""

    async def body(bridge: KafkaBridge) -> str:
        event = query(bridge)
        started = time.monotonic()
        deadline_ms = int(time.time() * 1000) + 1000
        assert await bridge.call(bridge.topics.requests, event, deadline_ms) is None
        assert 0.9 <= time.monotonic() - started < 5
        return event.event_id

    event_id = with_bridge(settings, body)
    assert read_one(settings, Topics(settings.region).requests).event_id == event_id


def test_an_append_the_broker_refuses_is_unavailable_at_once(
    settings: Settings, unique: str
) -> None:
    """Scenario: the broker refuses the append for good (a topic whose records may be at
    most 64 bytes); the call's deadline is 30 s away.

    We expect: ``KafkaUnavailable`` with the broker's error, within a few seconds: the
    failed delivery report ends the wait for a reply that cannot come."""
    admin = AdminClient(settings.kafka_common())
    tiny = f"{unique}.tiny"
    config = {"max.message.bytes": "64"}
    for future in admin.create_topics([NewTopic(tiny, 1, 1, config=config)]).values():
        future.result(30)

    async def body(bridge: KafkaBridge) -> None:
        started = time.monotonic()
        deadline_ms = int(time.time() * 1000) + 30_000
        with pytest.raises(KafkaUnavailable) as raised:
            await bridge.call(tiny, query(bridge), deadline_ms)
        assert time.monotonic() - started < 10
        assert raised.value.kafka_code == "MSG_SIZE_TOO_LARGE"

    with_bridge(settings, body)


def librdkafka_threads() -> int:
    return sum(
        comm.read_text().startswith("rdk:") for comm in Path("/proc/self/task").glob("*/comm")
    )


def test_a_bridge_whose_broker_does_not_answer_stops_within_its_flush_bound() -> None:
    """Scenario: the broker is gone (nothing listens at the bootstrap address) while a
    call's event waits in the producer's queue; the API stops with a 1 s flush bound.

    We expect: the stop returns within a few seconds, and every librdkafka thread the
    bridge started is gone: the undelivered event is given up, not waited for (a
    producer closed with it queued waits without a bound)."""
    settings = Settings(region="unreachable", bootstrap_servers="127.0.0.1:1", api_instance=0)
    before = librdkafka_threads()

    async def run() -> float:
        bridge = KafkaBridge(settings, Metrics())
        bridge.start(asyncio.get_running_loop())
        call = asyncio.create_task(bridge.call(bridge.topics.requests, query(bridge)))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await asyncio.to_thread(bridge.stop, 1.0)
        stopped_s = time.monotonic() - started
        call.cancel()
        return stopped_s

    assert asyncio.run(run()) < 8
    assert librdkafka_threads() <= before
