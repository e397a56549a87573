"""Session-wide Kafka for the tests: an external cluster, a container, or a local broker.

Order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; else a testcontainers Kafka if a Docker engine
answers; else a ``maas.broker.LocalBroker`` (a JVM from Maven jars) in a temp dir.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Generator, Iterator
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


def pytest_configure(config: pytest.Config) -> None:
    # `timeout` (and a CI that stops a run) sends SIGTERM, which ended pytest at once and
    # left the session's broker and services running; as an interrupt, they are torn down.
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


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


SHARED_REGION = "shared_region"
_shared_stacks: list[Generator[Stack, None, None]] = []  # the shared region, once started
_last_shared_user: str | None = None  # the node id of the last test that uses it


@pytest.fixture(scope="module")
def stack(
    kafka: KafkaCluster, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """A fresh region with every process of the service running (see ``tests/stack.py``),
    or, for a module marked ``shared_region``, the one region those modules share."""
    if request.node.get_closest_marker(SHARED_REGION):
        yield request.getfixturevalue("shared_stack")
    else:
        yield from run_stack(kafka, tmp_path_factory, request)


@pytest.fixture(scope="session")
def shared_stack(
    kafka: KafkaCluster, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """The region of the ``shared_region`` modules: they only call the API (they kill no
    process and change no setting), and a region of their own each cost ~4.5 s to start
    and stop. It stops after the last of them, not at the end of the session: idle, it
    would still take CPU from the fault scenarios and benchmarks that follow."""
    stacks = run_stack(kafka, tmp_path_factory, request)
    _shared_stacks.append(stacks)
    with contextlib.closing(stacks):
        yield next(stacks)


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    global _last_shared_user
    users = [
        item.nodeid
        for item in items
        if item.get_closest_marker(SHARED_REGION) and "stack" in getattr(item, "fixturenames", ())
    ]
    _last_shared_user = users[-1] if users else None


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    if item.nodeid == _last_shared_user:
        for stacks in _shared_stacks:
            stacks.close()  # runs run_stack's teardown: every process stopped


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
