"""A ledger processor's first transactional call, on a producer just made.

``init_transactions`` called before the producer has any broker connection makes
librdkafka's coordinator query find no broker; about half the time it then waits out its
500 ms query timer instead of asking as soon as the connection is up (measured on fresh
producers against the local broker: 0.51-1.04 s against 0.06 s). A processor first has
its producer reach a broker (``reach_a_broker``), which narrows that window: the ask
brings up a connection, but the broker it learns of gets one of its own, and on a loaded
machine (the whole suite) one of three asked producers still found none. Whether the
query found no broker is read from librdkafka's own log, not from timings.
"""

from __future__ import annotations

import logging
import socket
import time

import pytest
from confluent_kafka import Producer

from processors.ledger.processor import reach_a_broker

pytestmark = pytest.mark.kafka

NO_BROKER = "No brokers available for Transactions"


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def librdkafka_log(bootstrap: str, transactional_id: str, *, reach_first: bool) -> list[str]:
    """The eos debug log of a fresh producer's ``init_transactions``."""
    kept = Kept()
    logger = logging.getLogger(f"librdkafka.{transactional_id}")
    logger.addHandler(kept)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "debug": "eos",
            "logger": logger,
        }
    )
    if reach_first:
        reach_a_broker(producer, f"{transactional_id}.topic")
    producer.init_transactions(30)
    producer.poll(0)  # serves the log lines still queued
    return kept.lines


def test_a_producer_that_reached_a_broker_finds_its_coordinator_at_once(kafka, unique: str) -> None:
    """Scenario: five fresh transactional producers init transactions at once, five
    more after ``reach_a_broker``.
    We expect: each of the first five logs that its coordinator query found no broker
    (the case that can wait 500 ms); of the other five, not every one does (none did in
    16 of 16 alone; one in three under the whole suite)."""
    cold = [
        librdkafka_log(kafka.bootstrap, f"{unique}-cold-{i}", reach_first=False) for i in range(5)
    ]
    reached = [
        librdkafka_log(kafka.bootstrap, f"{unique}-reached-{i}", reach_first=True) for i in range(5)
    ]

    assert all(any(NO_BROKER in line for line in lines) for lines in cold), cold
    found_none = [any(NO_BROKER in line for line in lines) for lines in reached]
    assert not all(found_none), reached


def test_reaching_no_broker_is_only_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # closed again: nothing listens there
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0})
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="maas.ledger"):
        reach_a_broker(producer, "nowhere")
    assert time.monotonic() - started < 5.0
    assert "no broker answered before init_transactions" in caplog.text
