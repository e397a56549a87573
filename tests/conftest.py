"""Session-wide Kafka for the tests: an external cluster, a container, or a local broker.

Order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; else a testcontainers Kafka if a Docker engine
answers; else a ``maas.broker.LocalBroker`` (a JVM from Maven jars) in a temp dir.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from maas.broker import LocalBroker, free_port
from tests.integration.ledger_driver import LedgerDriver
from tests.stack import Stack, run_stack


@dataclass(frozen=True)
class KafkaCluster:
    bootstrap: str
    broker: LocalBroker | None  # None when the cluster is not ours to stop or kill


_local_broker: LocalBroker | None = None  # for the failure pointer in the summary


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kafka-log",
        action="store_true",
        help="on failure, also print the last lines of the local broker's log",
    )


def _docker_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    global _local_broker
    if bootstrap := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield KafkaCluster(bootstrap, None)
    elif _docker_answers():
        from testcontainers.community.kafka import KafkaContainer  # only where Docker is

        container = (
            KafkaContainer("confluentinc/cp-kafka:7.6.0")
            .with_kraft()
            .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
            .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        )
        with container:
            yield KafkaCluster(container.get_bootstrap_server(), None)
    else:
        broker = LocalBroker(tmp_path_factory.mktemp("kafka"), port=free_port())
        _local_broker = broker
        broker.start()
        try:
            yield KafkaCluster(broker.bootstrap, broker)
        finally:
            broker.stop()


@pytest.fixture
def unique() -> str:
    """A fresh short name for topic prefixes, group ids and transactional ids."""
    return f"t{uuid.uuid4().hex[:10]}"


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    failed = terminalreporter.stats.get("failed") or terminalreporter.stats.get("error")
    if not failed or _local_broker is None:
        return
    terminalreporter.section("kafka broker")
    terminalreporter.write_line(f"broker log: {_local_broker.log_path}")
    if config.getoption("--kafka-log"):
        terminalreporter.write_line(_local_broker.tail(40))


@pytest.fixture(scope="module")
def stack(
    kafka: KafkaCluster, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """A fresh region with every process of the service running (see ``tests/stack.py``)."""
    yield from run_stack(kafka, tmp_path_factory, request)


@pytest.fixture
def make_driver(
    kafka: KafkaCluster, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., LedgerDriver]]:
    """Fresh regions with ledger processors driven over Kafka (``ledger_driver``)."""
    drivers: list[LedgerDriver] = []

    def make(**env: str) -> LedgerDriver:
        driver = LedgerDriver(kafka.bootstrap, tmp_path / f"driver{len(drivers)}", env=env)
        drivers.append(driver)
        return driver

    failed_before = request.session.testsfailed
    yield make
    for driver in drivers:
        driver.close()
    if request.session.testsfailed > failed_before:
        for driver in drivers:
            for instance in driver.procs:
                print(f"\n----- region {driver.region} processor {instance} (log tail) -----")
                print(driver.tail(instance, 60))
