"""Restoring a partition's state from the changelog, on assignment (pitfall 8).

RocksDB is outside the Kafka transaction, so on assignment the ledger processor opens the
partition's store and replays the compacted changelog from the store's own offset to the
changelog's end (``read_committed``: only committed transactions' writes), after the
committed offsets are stable (``processors.ledger.processor``, commit protocol).

The end is taken once no transaction is open in the changelog partition. A
``read_committed`` reader stops at the first open transaction, before anything committed
after it, and the wait for stable offsets does not see every open transaction: not one
whose writer stopped before its offsets reached the group coordinator, nor a commit
whose markers are still on their way to the changelog's leader while the group's offsets
are already stable. A restore that stopped there decided from stale state and forked
hash chains (the Jepsen faults run in CI, 2026-12-04: two owners after a zombie, the
second reused a client's seq numbers). Only owners write a changelog partition, so what
is open at assignment belongs to a previous owner and ends within its transaction
timeout (a zombie's is aborted); until then the restore waits. The restore also reads
up to that end, not to the first end-of-partition: a leader just elected may report a
lower end for a moment.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from core.settings import Settings
from core.topics import Topics
from core.watermarks import WatermarkAsker
from processors.ledger.store import PartitionStore

log = logging.getLogger("maas.ledger")

RESTORE_BATCH = 5_000
# A watermark query's own time-out: short, as the next ask is a fresh client's
# (core.watermarks). With 10 s and an exit instead, a broker kill held a restoring
# instance's partitions 12 s.
WATERMARK_QUERY_S = 2.0
ASK_AGAIN_S = 0.2  # after an answer that came at once
RESTORE_TIMEOUT_S = 300
OPEN_TRANSACTION_POLL_S = 0.1
# Answers that librdkafka does not flag as retriable but that pass once the cluster's
# metadata catches up: a topic just created or a broker just restarted has no leader yet;
# a killed broker's connection fails, and when it leaves the metadata librdkafka destroys
# its handle, failing what was queued on it (seen in the Jepsen faults run). Not a local
# "unknown partition" (the partition missing from librdkafka's metadata): asked again by
# the same client, one persisted for 40 s in a faults run and held the instance's every
# partition, where an exit and a restart (a fresh client) serve again in ~2 s.
# A watermark query asks again with a fresh client anyway (``FRESH_CLIENT_CODES``).
TRANSIENT_CODES = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TRANSPORT,
    KafkaError._DESTROY_BROKER,
}


# Answers that a fresh client's ask outlives: a query that waited for a killed leader,
# and a partition missing from the asking client's metadata (a fresh client asked while
# a paused broker led it, in a faults run of 2026-12-07; it exited and restarted).
FRESH_CLIENT_CODES = {KafkaError._TIMED_OUT, KafkaError._UNKNOWN_PARTITION}


def is_transient(err: KafkaError) -> bool:
    """Whether a failed metadata or offset query may simply be asked again."""
    return err.retriable() or err.code() in TRANSIENT_CODES


class ChangelogRestorer:
    """Reads the changelog (its own consumer, assigned one partition at a time)."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.changelog_topic = Topics(settings.region).ledger_changelog
        # The broker aborts a timed-out transaction only at its next periodic check, so an
        # open one may outlive its timeout (processor: STABLE_OFFSETS_TIMEOUTS).
        self.open_transaction_wait_s = 3 * settings.transaction_timeout_ms / 1000
        common = {**settings.kafka_common(), "group.id": f"{group}.restore"}
        # Where the log ends, open transactions included (see the module docstring).
        self.log_ends = WatermarkAsker({**common, "isolation.level": "read_uncommitted"})
        self.stable_ends = WatermarkAsker({**common, "isolation.level": "read_committed"})
        self.consumer = Consumer(
            {
                **common,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                # A restore reads to the end and stops there: the end is known only when
                # a fetch comes back empty, so a short wait; idle, nothing is assigned.
                "fetch.wait.max.ms": 5,
            }
        )

    def warm(self) -> None:
        """Learn where the changelog's partitions live before any is assigned: a consumer
        assigned a partition of a topic it has no metadata for took 0.5-0.9 s here to
        read that partition's end, on the path of every restart's first restore; asked
        first, 0.05-0.09 s. A failed ask changes nothing: the restore learns it then."""
        try:
            self.consumer.list_topics(self.changelog_topic, timeout=WATERMARK_QUERY_S)
        except KafkaException as exc:
            log.warning("changelog metadata not fetched error=%s", exc.args[0].str())

    def close(self) -> None:
        self.consumer.close()
        self.log_ends.close()
        self.stable_ends.close()

    def restore(self, partition: int, path: Path) -> PartitionStore:
        """Open the partition's RocksDB at ``path`` and replay the changelog past its
        stored offset."""
        store = PartitionStore(path)
        high = self.settled_end(partition)
        if store.changelog_offset >= high:
            # Local files ahead of the changelog belong to another history (the topic
            # was recreated): never trust them, rebuild from the changelog.
            log.warning(
                "local state ahead of changelog partition=%d stored=%d end=%d; rebuilding",
                partition,
                store.changelog_offset,
                high,
            )
            store.destroy()
            store = PartitionStore(path)
        start = store.changelog_offset + 1 if store.changelog_offset >= 0 else OFFSET_BEGINNING
        tp = TopicPartition(self.changelog_topic, partition, start)
        self.consumer.assign([tp])
        applied = 0
        batch: list[tuple[bytes, bytes | None]] = []
        last_offset = store.changelog_offset
        started = time.monotonic()
        while True:
            msg = self.consumer.poll(1.0)
            if msg is None:
                if time.monotonic() - started > RESTORE_TIMEOUT_S:
                    raise TimeoutError(f"changelog partition {partition} not readable to its end")
                continue
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
                if (msg.offset() or 0) >= high:
                    break
                continue  # an end below the settled one: a new leader catching up
            key, offset = msg.key(), msg.offset()
            # Every changelog record is a state write, keyed; a consumed record has an offset.
            assert key is not None and offset is not None
            batch.append((key, msg.value()))
            last_offset = offset
            if len(batch) >= RESTORE_BATCH:
                store.apply(batch, last_offset)
                applied += len(batch)
                batch = []
        if batch:
            store.apply(batch, last_offset)
            applied += len(batch)
        self.consumer.unassign()
        log.info(
            "partition restored partition=%d records=%d from_offset=%s seconds=%.2f",
            partition,
            applied,
            start,
            time.monotonic() - started,
        )
        return store

    def settled_end(self, partition: int) -> int:
        """The changelog partition's end once no transaction is open in it."""
        tp = TopicPartition(self.changelog_topic, partition)
        give_up = time.monotonic() + self.open_transaction_wait_s
        waiting = False
        while True:
            stable = self.watermarks(tp)[1]  # read_committed: before the first open one
            end = self.watermarks(tp, uncommitted=True)[1]
            if stable >= end:
                return end
            if time.monotonic() > give_up:
                raise TimeoutError(f"changelog partition {partition} keeps a transaction open")
            if not waiting:
                log.info(
                    "waiting for an open transaction in the changelog partition=%d "
                    "stable_end=%d end=%d",
                    partition,
                    stable,
                    end,
                )
                waiting = True
            time.sleep(OPEN_TRANSACTION_POLL_S)

    def watermarks(self, tp: TopicPartition, uncommitted: bool = False) -> tuple[int, int]:
        """(low, high) of a partition, waiting out a leader that is not there yet; high is
        the last stable offset, or the log's end if ``uncommitted``."""
        give_up = time.monotonic() + 60
        asker = self.log_ends if uncommitted else self.stable_ends
        while True:
            try:
                return asker.ask(tp, WATERMARK_QUERY_S)
            except KafkaException as exc:
                err = exc.args[0]
                fresh = err.code() in FRESH_CLIENT_CODES
                if not (fresh or is_transient(err)) or time.monotonic() > give_up:
                    raise
                if err.code() != KafkaError._TIMED_OUT:
                    time.sleep(ASK_AGAIN_S)
