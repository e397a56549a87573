"""A local 3-node KRaft cluster keeps acknowledged writes and keeps accepting them
while any one node is killed, paused or restarting.

One cluster for the module (its start is most of the run time). Every test leaves all
three nodes running, also when it fails, so the next test starts from a whole cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigEntry, ConfigResource, NewTopic

from api.bridge import KafkaBridge, reply_consumer_config
from api.metrics import Metrics
from core.admin import ensure_topics, topic_specs
from core.settings import Settings
from core.topics import Topics
from core.watermarks import WatermarkAsker
from maas.cluster import LocalCluster
from processors.ledger.processor import init_transactions
from processors.ledger.restore import ChangelogRestorer, is_transient
from processors.watchdog import Watchdog
from tests.stack import value_of

pytestmark = [
    pytest.mark.scenario,
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("java") is None, reason="a local cluster needs java"),
]

SESSION_TIMEOUT_S = 4.0  # broker.session.timeout.ms of maas.broker's config
TRANSACTION_PARTITIONS = 4  # transaction.state.log.num.partitions of maas.broker's config


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        # Its data is thrown away: a crash of each node costs nothing, where a clean stop
        # took 14 s (the last node waits out the controller quorum it lost).
        for node in cluster.nodes:
            cluster.kill(node.node_id)


@pytest.fixture
def restore(cluster: LocalCluster) -> Iterator[None]:
    """Whatever a test killed or paused runs again afterwards."""
    yield
    for node in cluster.nodes:
        if node.node_id in cluster.paused:
            cluster.resume(node.node_id)
        if not node.is_running():
            cluster.restart(node.node_id)


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 30) -> float:
    """Seconds until ``check()`` holds; fails the test after ``timeout_s``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"not within {timeout_s} s: {what}")
        time.sleep(0.2)
    return time.monotonic() - started


def isr(cluster: LocalCluster, topic: str) -> dict[int, set[int]]:
    partitions = cluster.metadata(topic).topics[topic].partitions
    return {p.id: set(p.isrs) for p in partitions.values()}


def whole_isr(cluster: LocalCluster, topic: str) -> bool:
    """Every partition of ``topic`` has its 3 replicas in sync."""
    return all(len(s) == 3 for s in isr(cluster, topic).values())


def views_of_leaders(cluster: LocalCluster, topic: str, node_id: int) -> dict[int, int]:
    """Partition -> leader as one node sees it."""
    partitions = cluster.metadata(topic, node_id=node_id).topics[topic].partitions
    return {p.id: p.leader for p in partitions.values() if p.leader >= 0}


def create_topics(cluster: LocalCluster, partitions: dict[str, int]) -> None:
    """Topics with 3 replicas, once every replica is in sync (a fault test starts whole)."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    specs = [NewTopic(name, count, 3) for name, count in partitions.items()]
    for future in admin.create_topics(specs).values():
        future.result(timeout=30)
    for name in partitions:
        wait_for(f"{name} in sync", partial(whole_isr, cluster, name))


def produce_all(producer: Producer, topic: str, values: list[bytes], partitions: int) -> None:
    """Produce and flush; fails on any delivery error (acks=all: two replicas have it)."""
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    for i, value in enumerate(values):
        producer.produce(topic, value, partition=i % partitions, on_delivery=on_delivery)
    assert producer.flush(40) == 0, "messages still in flight after 40 s"
    assert errors == []


def idempotent_producer(cluster: LocalCluster) -> Producer:
    return Producer(
        {
            "bootstrap.servers": cluster.bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": 30_000,
            "log_level": 0,
        }
    )


def read_all(cluster: LocalCluster, topic: str, partitions: int) -> list[bytes]:
    """Every committed value of ``topic``, read from the start to each partition's end
    (so a duplicate or an aborted record would be there too); no group offsets used."""
    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap,
            "group.id": f"{topic}.reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    values: list[bytes] = []
    try:
        ends = {p: end_offset(consumer, TopicPartition(topic, p)) for p in range(partitions)}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        remaining = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + 30
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is None:
                values.append(value_of(msg))
            elif error.code() == KafkaError._PARTITION_EOF:
                partition, offset = msg.partition(), msg.offset()
                assert partition is not None and offset is not None  # set on the EOF event
                if offset >= ends[partition]:
                    remaining.discard(partition)
        assert not remaining, f"partitions {remaining} of {topic} not read to the end in 30 s"
    finally:
        consumer.close()
    return values


def end_offset(consumer: Consumer, partition: TopicPartition, timeout_s: float = 30) -> int:
    """The partition's end, asked again while the error is transient: just after a node
    comes back, the client's metadata can still name a leader that no longer is (CI read
    NOT_LEADER_FOR_PARTITION here once)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return consumer.get_watermark_offsets(partition, timeout=10)[1]
        except KafkaException as exc:
            if not is_transient(exc.args[0]) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def says_empty(ask: Callable[[], tuple[int, int]]) -> Callable[[], bool]:
    """For ``wait_for``: whether ``ask``'s watermarks say a new partition is empty."""

    def answers() -> bool:
        try:
            return ask() == (0, 0)
        except KafkaException:  # a topic just created: not yet in the client's metadata
            return False

    return answers


@contextlib.contextmanager
def leader_killed_for_4_s(cluster: LocalCluster, tp: TopicPartition) -> Iterator[float]:
    """Kill the leader of ``tp`` and start it again 4 s later, as the Jepsen faults form
    does; yields the time of the kill and waits for the restart on leaving."""
    victim = cluster.leader_of(tp.topic, tp.partition)
    assert victim in (1, 2, 3)

    def restart_later() -> None:
        time.sleep(4)
        cluster.restart(victim)

    killed_at = time.monotonic()
    cluster.kill(victim)
    back = threading.Thread(target=restart_later)
    back.start()
    try:
        yield killed_at
    finally:
        back.join()


def transaction_partition(transactional_id: str) -> int:
    """The ``__transaction_state`` partition of the id's coordinator, as the broker picks
    it: Java's ``String.hashCode``, then ``Utils.abs(h) % partitions``."""
    h = 0
    for char in transactional_id:  # ASCII ids: one UTF-16 unit per character
        h = (31 * h + ord(char)) & 0xFFFFFFFF
    signed = h - (1 << 32) if h >= 1 << 31 else h
    return (0 if signed == -(1 << 31) else abs(signed)) % TRANSACTION_PARTITIONS


# --------------------------------------------------------------------------- tests


def test_transaction_partition_matches_java() -> None:
    # Values of "...".hashCode() in Java; the last one overflows to a negative int.
    assert transaction_partition("a") == 97 % 4
    assert transaction_partition("ab") == 3105 % 4
    assert transaction_partition("polygenelubricants") == 0  # hashCode == Integer.MIN_VALUE
    assert transaction_partition("hello world") == 1794106052 % 4


def test_three_brokers_with_durable_defaults(cluster: LocalCluster) -> None:
    assert set(cluster.metadata().brokers) == {1, 2, 3}
    assert cluster.bootstrap == ",".join(f"127.0.0.1:{n.port}" for n in cluster.nodes)
    assert [n.node_id for n in cluster.nodes] == [1, 2, 3]
    assert len({n.port for n in cluster.nodes} | {n.controller_port for n in cluster.nodes}) == 6

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    for node in cluster.nodes:
        resource = ConfigResource(ConfigResource.Type.BROKER, str(node.node_id))
        config = admin.describe_configs([resource])[resource].result(timeout=10)
        assert config["unclean.leader.election.enable"].value == "false"
        assert config["min.insync.replicas"].value == "2"
        assert config["default.replication.factor"].value == "3"

    # The ports are remembered: another LocalCluster on the same home finds the same ones.
    assert LocalCluster(cluster.home).bootstrap == cluster.bootstrap
    for node in cluster.nodes:
        assert node.home == cluster.home / f"node-{node.node_id}"
        assert node.is_formatted()


def test_region_topics_have_three_replicas_and_two_in_sync(
    cluster: LocalCluster, unique: str
) -> None:
    settings = Settings(region=unique, bootstrap_servers=cluster.bootstrap, replication_factor=3)
    ensure_topics(settings)
    names = [spec.topic for spec in topic_specs(settings)]

    # Each node applies the new topics on its own: wait until the one asked has them all.
    wait_for("every topic in the metadata", lambda: set(names) <= set(cluster.metadata().topics))
    metadata = cluster.metadata()
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    configs: dict[str, dict[str, ConfigEntry]] = {}

    def described() -> bool:
        # The admin asks any node, and one may not have applied the topics yet.
        try:
            futures = admin.describe_configs(resources).items()
            configs.update({r.name: f.result(timeout=10) for r, f in futures})
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
            return False
        return True

    wait_for("every topic's configuration from the node asked", described)
    for name in names:
        partitions = metadata.topics[name].partitions.values()
        assert partitions, name
        assert all(sorted(p.replicas) == [1, 2, 3] for p in partitions), name
        assert configs[name]["min.insync.replicas"].value == "2", name


def test_killed_leader_is_replaced_and_rejoins(
    cluster: LocalCluster, unique: str, restore: None
) -> None:
    """Scenario: kill -9 the node that leads a partition and the coordinator of a
    transactional producer, then restart it.

    We expect: a new leader from the two left; acks=all writes and a transaction commit
    still succeed (two of three in sync); the node rejoins every ISR; nothing acknowledged
    is lost or written twice.
    """
    topic, txn_topic = f"{unique}.kill", f"{unique}.kill-txn"
    create_topics(cluster, {topic: 3, txn_topic: 1})
    producer = idempotent_producer(cluster)
    before = [f"before-{i}".encode() for i in range(30)]
    produce_all(producer, topic, before, 3)
    # With all three nodes up: __transaction_state (replication factor 3) cannot be
    # created while one is down.
    transactional_id = f"{unique}-tx"
    txn = Producer(
        {
            "bootstrap.servers": cluster.bootstrap,
            "transactional.id": transactional_id,
            "message.timeout.ms": 30_000,
            # librdkafka asks for the new coordinator only as often as it retries the
            # dead one, up to reconnect.backoff.max.ms (10 s by default): measured here,
            # the commit after the kill took 12 s with the default, about 5 s with 1 s.
            "reconnect.backoff.max.ms": 1000,
            "log_level": 0,
        }
    )
    txn.init_transactions(60)
    txn.begin_transaction()
    txn.produce(txn_topic, b"all-up")
    txn.commit_transaction(30)

    victim = cluster.leaders("__transaction_state")[transaction_partition(transactional_id)]
    # Leaders of a new topic are spread over the nodes: each leads one of 3 partitions.
    partition = next(p for p, leader in cluster.leaders(topic).items() if leader == victim)
    cluster.kill(victim)
    assert not cluster.node(victim).is_running()
    # At once, while the coordinator moves: the commit waits for a replica to take over
    # the transaction's state.
    txn.begin_transaction()
    txn.produce(txn_topic, b"coordinator-down")
    txn.commit_transaction(60)

    wait_for(
        f"a new leader of {topic}/{partition} other than node {victim}",
        lambda: cluster.leader_of(topic, partition) not in (None, victim),
    )
    # The dead node is out of the ISR, so acks=all now means the two that are left.
    wait_for(
        f"node {victim} out of every ISR",
        lambda: all(victim not in s for s in isr(cluster, topic).values()),
    )
    during = [f"during-{i}".encode() for i in range(30)]
    produce_all(producer, topic, during, 3)
    assert all(len(s) == 2 for s in isr(cluster, topic).values())

    cluster.restart(victim)
    assert victim in cluster.metadata().brokers
    wait_for(
        f"node {victim} back in every ISR of {topic}",
        lambda: whole_isr(cluster, topic),
    )
    # Nothing acknowledged was lost, and the idempotent producer wrote nothing twice.
    assert sorted(read_all(cluster, topic, 3)) == sorted(before + during)
    assert read_all(cluster, txn_topic, 1) == [b"all-up", b"coordinator-down"]


def test_a_restore_asks_a_killed_leaders_partition_again_with_fresh_clients(
    cluster: LocalCluster, unique: str, restore: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Scenario: a ledger processor's changelog restorer has asked where a changelog
    partition ends; its leader is killed (and started again 4 s later, as the Jepsen
    faults form does), and the restorer asks again at once, as an instance assigned the
    partition would.

    We expect: the answer once the partition has a leader again, from fresh clients: the
    query times out (``WATERMARK_QUERY_S``) while the leader is gone, and the clients that
    asked are replaced. The same client, asked again, hung 9-11 s (it waits for the old
    leader), and with a 10 s time-out and an exit instead a broker kill held a restoring
    instance's partitions 12 s in a faults run.
    """
    settings = Settings(region=unique, bootstrap_servers=cluster.bootstrap, replication_factor=3)
    ensure_topics(settings)
    restorer = ChangelogRestorer(settings, f"{unique}.ledger")
    tp = TopicPartition(restorer.changelog_topic, 0)

    wait_for(
        "the restorer answers for the new changelog",
        says_empty(lambda: restorer.watermarks(tp)),
    )
    caplog.set_level(logging.INFO, logger="core.watermarks")
    try:
        with leader_killed_for_4_s(cluster, tp) as killed_at:
            assert restorer.watermarks(tp) == (0, 0)
            answered_s = time.monotonic() - killed_at
    finally:
        restorer.close()
    assert "the next ask uses a fresh client" in caplog.text  # a query failed
    assert answered_s < 9.0, f"answered {answered_s:.1f} s after the kill"


def test_an_api_starting_while_its_reply_leader_is_killed_serves_once_it_is_back(
    cluster: LocalCluster, unique: str, restore: None
) -> None:
    """Scenario: an API instance starts (a restart, or a rolling deploy) while the leader
    of its reply partition is killed, and started again 4 s later.

    We expect: the instance positions its replies, and so serves, once the partition has
    a leader again: its failed queries are asked again by fresh clients
    (``core.watermarks``). With the same client asked again, a restart in a Jepsen faults
    run answered 503 not_ready for 15 s, and its clients gave up; the same client in a
    trial here answered 4-17 s after the kill, fresh ones 5.5-8 s.
    """
    settings = Settings(
        region=unique, bootstrap_servers=cluster.bootstrap, replication_factor=3, api_instance=1
    )
    ensure_topics(settings)
    tp = TopicPartition(Topics(unique).replies, settings.api_instance)
    asker = WatermarkAsker(reply_consumer_config(settings))
    try:
        wait_for("the new reply partition answers", says_empty(lambda: asker.ask(tp, 2.0)))
    finally:
        asker.close()
    bridge = KafkaBridge(settings, Metrics())
    loop = asyncio.new_event_loop()  # replies would be handed to it; none come here
    try:
        with leader_killed_for_4_s(cluster, tp) as killed_at:
            bridge.start(loop)
            assert bridge.wait_positioned(30), "replies not positioned 30 s after the kill"
            positioned_s = time.monotonic() - killed_at
    finally:
        bridge.stop()
        loop.close()
    assert positioned_s < 12.0, f"positioned {positioned_s:.1f} s after the kill"


def test_paused_leader_loses_leadership_and_rejoins(
    cluster: LocalCluster, unique: str, restore: None
) -> None:
    """Scenario: SIGSTOP the leader of a partition (a long GC pause), then SIGCONT.

    We expect: after the broker session time-out the controller fences it and moves its
    leadership; once resumed it rejoins and every ISR is whole. (Writes while a node is
    down are the killed-leader scenario's; a paused node stalls some clients for longer:
    docs/architecture.md, "Decision: a local 3-node cluster for fault tests".)
    """
    topic = f"{unique}.pause"
    create_topics(cluster, {topic: 3})
    victim = cluster.leader_of(topic, 0)
    assert victim in (1, 2, 3)
    others = [n.node_id for n in cluster.nodes if n.node_id != victim]

    cluster.pause(victim)
    moved_s = wait_for(
        f"leadership of {topic} off paused node {victim}, as every other node sees it",
        lambda: all(
            victim not in leaders.values() and len(leaders) == 3
            for leaders in (views_of_leaders(cluster, topic, node) for node in others)
        ),
    )
    # Only the broker session time-out can have moved it: the node never said goodbye.
    assert moved_s >= SESSION_TIMEOUT_S - 1.5
    assert victim not in cluster.metadata().brokers  # fenced

    cluster.resume(victim)
    wait_for(f"paused node {victim} back as a broker", lambda: victim in cluster.metadata().brokers)
    wait_for(
        f"node {victim} back in every ISR of {topic}",
        lambda: whole_isr(cluster, topic),
    )


def test_processor_start_outlasts_a_paused_transaction_coordinator(
    cluster: LocalCluster, unique: str, restore: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Scenario: a ledger processor starts while the coordinator of its transactional id
    is paused (a broker in a long GC pause, or one restarting: seen in CI as
    NOT_COORDINATOR).

    We expect: ``init_transactions`` times out retriably, is repeated instead of ending
    the process, and succeeds once the coordinator has moved; the producer then commits.
    """
    transactional_id = f"{unique}-start"
    txn_topic = f"{unique}.start-txn"
    create_topics(cluster, {txn_topic: 1})
    config = {
        "bootstrap.servers": cluster.bootstrap,
        "transactional.id": transactional_id,
        "reconnect.backoff.max.ms": 1000,
        "log_level": 0,
    }
    # __transaction_state (replication factor 3) is created only while all three run.
    Producer({**config, "transactional.id": f"{unique}-warm"}).init_transactions(60)
    victim = cluster.leaders("__transaction_state")[transaction_partition(transactional_id)]
    cluster.pause(victim)

    producer = Producer(config)
    with caplog.at_level(logging.WARNING, logger="maas.ledger"):
        init_transactions(producer, 2.0, Watchdog(), threading.Event())
    retries = [r for r in caplog.records if "init_transactions retry" in r.getMessage()]
    assert retries, "the paused coordinator should have made the first call time out"
    producer.begin_transaction()
    producer.produce(txn_topic, b"after-the-move")
    producer.commit_transaction(30)
    # Read back with the whole cluster: a reader's metadata may still name the paused
    # node, which for a moment after it resumes still answers as the leader it was (CI
    # read nothing, both while it was stopped and just after: an end offset of 0).
    cluster.resume(victim)
    wait_for(f"paused node {victim} back as a broker", lambda: victim in cluster.metadata().brokers)
    wait_for(
        "the committed record read back",
        lambda: read_all(cluster, txn_topic, 1) == [b"after-the-move"],
    )
