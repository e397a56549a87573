"""The broker the tests run on works for what the ledger needs, and survives restarts."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from core.topics import key_partition
from maas import jvm_archive
from maas.broker import FORMAT_JVM_FLAGS, JVM_FLAGS, LocalBroker, free_port, resolve_classpath
from tests.stack import value_of


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)


def consume(bootstrap: str, topic: str, group: str, count: int, **conf: object) -> list[bytes]:
    """Read ``count`` values from the start of ``topic`` (fails after 30 s)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **conf,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(values) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            values.append(value_of(msg))
    finally:
        consumer.close()
    return values


@pytest.mark.kafka
def test_create_produce_consume(kafka, unique: str) -> None:
    topic = f"{unique}.plain"
    create_topic(kafka.bootstrap, topic, partitions=3)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all"})
    sent = [f"m{i}".encode() for i in range(20)]
    for i, value in enumerate(sent):
        producer.produce(topic, value, key=str(i % 5).encode())
    assert producer.flush(30) == 0

    assert sorted(consume(kafka.bootstrap, topic, unique, len(sent))) == sorted(sent)


@pytest.mark.kafka
def test_key_partition_is_the_partition_librdkafka_gives_a_key(kafka, unique: str) -> None:
    """The auditor reads a client's ledger from one partition, the one its id keys to:
    ``key_partition`` must agree with the producers' default partitioner on every key."""
    topic = f"{unique}.keyed"
    create_topic(kafka.bootstrap, topic, partitions=7)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all"})
    placed: dict[bytes, int] = {}

    def delivered(err: object, msg: Message) -> None:
        assert err is None, err
        placed[msg.key() or b""] = msg.partition() or 0

    keys = [f"client-{i}-{'x' * (i % 40)}".encode() for i in range(300)] + ["čaj-☕".encode()]
    for key in keys:
        producer.produce(topic, b"v", key=key, on_delivery=delivered)
    assert producer.flush(30) == 0

    assert len(set(placed.values())) == 7  # every partition got some: the test can fail
    assert {key: key_partition(key, 7) for key in keys} == placed


@pytest.mark.kafka
def test_transactions_commit_and_abort(kafka, unique: str) -> None:
    # init_transactions needs the transaction state topic, which a single node can only
    # create with replication factor 1: this catches a broker config that forgot that.
    topic = f"{unique}.txn"
    create_topic(kafka.bootstrap, topic)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": f"{unique}-tx"})
    producer.init_transactions(60)

    producer.begin_transaction()
    producer.produce(topic, b"aborted")
    producer.abort_transaction(30)

    producer.begin_transaction()
    producer.produce(topic, b"committed")
    producer.commit_transaction(30)

    # read_committed skips the aborted record (and both transaction markers).
    values = consume(kafka.bootstrap, topic, unique, 1, **{"isolation.level": "read_committed"})
    assert values == [b"committed"]


@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("java") is None, reason="a local broker needs java")
def test_local_broker_keeps_data_across_stop_and_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """And the first clean stop leaves the class-data archive that later starts map
    (``maas/jvm_archive.py``), in a cache of this test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    broker = LocalBroker(tmp_path / "kafka", port=free_port())
    broker.start(timeout_s=40)
    try:
        assert "-XX:ArchiveClassesAtExit=" in jvm_command(broker)
        create_topic(broker.bootstrap, "kept")
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        producer.produce("kept", b"before-restart")
        assert producer.flush(10) == 0
        del producer  # it would retry against the stopped broker otherwise

        broker.stop()
        assert not broker.is_running()
        # The broker's archive, and the storage format tool's (its first run wrote it).
        java, classpath = LocalBroker._java(), resolve_classpath()
        archive = jvm_archive.archive_path(java, classpath, JVM_FLAGS)
        assert archive.is_file()
        assert jvm_archive.archive_path(java, classpath, FORMAT_JVM_FLAGS).is_file()
        assert not (broker.home / jvm_archive.DUMP_NAME).exists()
        broker.start(timeout_s=40)  # clean restart: same home, no re-format
        assert f"-XX:SharedArchiveFile={archive}" in jvm_command(broker)
        assert consume(broker.bootstrap, "kept", "g1", 1) == [b"before-restart"]

        broker.kill()  # a crash: the next start must recover the log
        assert not broker.is_running()
        broker.start(timeout_s=40)
        assert consume(broker.bootstrap, "kept", "g2", 1) == [b"before-restart"]
    finally:
        broker.stop()

    # Torn after they were cached, both archives crashed every JVM that mapped them
    # (SIGBUS): a new broker could neither be formatted nor started, ever again.
    format_archive = jvm_archive.archive_path(java, classpath, FORMAT_JVM_FLAGS)
    for torn in (archive, format_archive):
        torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    fresh = LocalBroker(tmp_path / "fresh", port=free_port())
    fresh.start(timeout_s=40)
    try:
        assert "-XX:ArchiveClassesAtExit=" in jvm_command(fresh)  # started without it
        assert not archive.exists()
        assert format_archive.stat().st_size > 0  # written again by the format's rerun
        assert list(fresh.home.glob("hs_err_pid*.log"))  # the crashes' reports, kept there
    finally:
        fresh.stop()
    assert archive.is_file()  # the clean stop wrote a new one


def jvm_command(broker: LocalBroker) -> str:
    pid = broker.pid()
    assert pid is not None
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().replace("\0", " ")
