"""Restoring a partition's state from the changelog when a transaction is still open in it.

The successor of a processor that stopped in the middle of a transaction may be assigned
the partition before that transaction has ended: paused before its offsets reached the
group coordinator (nothing pending there, so the wait for stable offsets does not see
it), or with its commit markers still on their way to the changelog's leader. A
``read_committed`` reader stops at the first open transaction, before anything committed
after it: a restore that stopped there would decide from stale state, and the hash
chains fork (seen once in CI under the Jepsen faults: a successor's successor reused a
client's seq numbers).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from core.admin import ensure_topics
from core.settings import Settings
from core.topics import Topics
from processors.ledger.restore import ChangelogRestorer

pytestmark = pytest.mark.kafka


def transactional(settings: Settings, name: str) -> Producer:
    producer = Producer({**settings.kafka_common(), "transactional.id": name})
    producer.init_transactions(30)
    return producer


def test_a_restore_waits_for_an_open_transaction_and_reads_what_was_committed_after_it(
    kafka, unique: str, tmp_path: Path
) -> None:
    """Scenario: in changelog partition 0, a zombie's transaction writes ``k/zombie`` and
    stays open; then its successor commits ``k/after``. A third owner restores the
    partition; the zombie's transaction is aborted 2 s later.

    We expect: the restore waits for it, then holds ``k/after`` and not ``k/zombie``."""
    settings = Settings(region=f"r{unique[:20]}".lower(), bootstrap_servers=kafka.bootstrap)
    ensure_topics(settings)
    topic = Topics(settings.region).ledger_changelog

    zombie = transactional(settings, f"{unique}-zombie")
    zombie.begin_transaction()
    zombie.produce(topic, key=b"k/zombie", value=b"stale", partition=0)
    zombie.flush(30)
    successor = transactional(settings, f"{unique}-successor")
    successor.begin_transaction()
    successor.produce(topic, key=b"k/after", value=b"committed", partition=0)
    successor.commit_transaction(30)

    aborted = threading.Timer(2.0, lambda: zombie.abort_transaction(30))
    aborted.start()
    restorer = ChangelogRestorer(settings, f"{unique}.ledger")
    started = time.monotonic()
    try:
        store = restorer.restore(0, tmp_path / "0")
        waited_s = time.monotonic() - started
    finally:
        aborted.join()
        restorer.close()

    assert waited_s >= 1.5, f"the restore did not wait for the open transaction ({waited_s:.2f} s)"
    assert store.get(b"k/after") == b"committed"
    assert store.get(b"k/zombie") is None
    store.close()


def test_a_warmed_restorer_reads_its_first_partition_without_waiting_for_metadata(
    kafka, unique: str, tmp_path: Path
) -> None:
    """Scenario: two fresh restorers each restore an empty changelog partition, one after
    asking for the changelog's metadata first (``warm``, as a processor does at start).

    We expect: the warmed one's first restore is much the faster (here 0.01-0.06 s
    against 0.5-0.9 s cold: the time a restart's first restore used to add)."""
    settings = Settings(region=f"r{unique[:20]}".lower(), bootstrap_servers=kafka.bootstrap)
    ensure_topics(settings)
    timings = {}
    for warmed in (False, True):
        restorer = ChangelogRestorer(settings, f"{unique}.{warmed}.ledger")
        try:
            if warmed:
                restorer.warm()
            started = time.monotonic()
            restorer.restore(int(warmed), tmp_path / f"store-{warmed}").close()
            timings[warmed] = time.monotonic() - started
        finally:
            restorer.close()

    assert timings[True] < timings[False] / 2, timings


def test_warming_without_a_broker_is_only_a_warning(tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # closed again: nothing listens there
    settings = Settings(region="nowhere", bootstrap_servers=f"127.0.0.1:{port}")
    restorer = ChangelogRestorer(settings, "nowhere.ledger")
    try:
        started = time.monotonic()
        restorer.warm()
        assert time.monotonic() - started < 5.0
    finally:
        restorer.close()
