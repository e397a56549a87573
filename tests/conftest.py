"""Session-wide Kafka for the tests: an external cluster, a container, or a local broker.

Order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; else a testcontainers Kafka if a Docker engine
answers; else a ``maas.broker.LocalBroker`` (a JVM from Maven jars) in a temp dir.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from maas.broker import LocalBroker, free_port
from tests.integration.ledger_driver import LedgerDriver
from tests.stack import Stack, run_stack


@dataclass(frozen=True)
class KafkaCluster:
    bootstrap: str
    broker: LocalBroker | None  # None when the cluster is not ours to stop or kill


_local_broker: LocalBroker | None = None  # for the failure pointer in a failed test's report

# ``./test`` runs pytest on two workers (pytest-xdist). Every test that runs Kafka or the
# service's processes runs on one of them, one after another as without workers: they
# time what they check (a deadline, a recovery, a refusal), and two at once on two cores
# made one miss its deadline. The tests of pure code (these folders) run on the other, a
# file at a time, during the first of those (the benchmarks' smoke modes, which only
# check that each benchmark runs).
PURE = ("tests/unit/", "tests/property/")


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


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    # A scheduler of our own: xdist's `loadgroup` ignores the groups under pytest 9.2
    # (pytest-dev/pytest-xdist#1386). Each scope goes whole to one worker.
    from xdist.scheduler import LoadScopeScheduling

    class PureBesideSerial(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if path.startswith(PURE) else "serial"

    return PureBesideSerial(config, log)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # In the failed test's own report: the broker lives in a worker, not in the process
    # that prints the summary.
    report: pytest.TestReport = yield
    if report.failed and _local_broker is not None and "kafka" in getattr(item, "fixturenames", ()):
        text = f"broker log: {_local_broker.log_path}"
        if item.config.getoption("--kafka-log"):
            text += "\n" + _local_broker.tail(40)
        report.sections.append(("kafka broker", text))
    return report


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
