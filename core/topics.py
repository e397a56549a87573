"""Topic names of one region, and the headers records carry. Topic prefixes stand in for
per-region clusters."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from confluent_kafka import Message

# A header of an outcome whose client its generator has answered already (a meme made
# in time). Nobody waits for the ledger to settle such an outcome, so the ledger may hold
# it to settle it later with others (processors/ledger/settlements.py). Only a hint for
# batching: an outcome without it is settled at once, which is always correct.
ANSWERED_HEADER = "maas-answered"
# A header of an input that reads a client's ledger state (a query, an erasure): the
# ledger first settles the outcomes it holds, so that the read sees every meme settled.
READS_HEADER = "maas-reads"
# A header of an approval: the partition of its client's inputs, where its outcome goes
# (the outcomes topic is co-partitioned with the ledger's other inputs). The approvals
# themselves are spread over their pool's partitions by request id, so that one client's
# memes are made by every generator of the pool, not by the one owning its partition.
CLIENT_PARTITION_HEADER = "maas-client-partition"


def key_partition(key: bytes, partitions: int) -> int:
    """The partition librdkafka's default partitioner (``consistent_random``) gives a
    record with this key: CRC-32 of the key, modulo the partition count. Every producer
    of the service keys by client id and leaves the choice to it, and the ledger writes a
    client's entries on its inputs' partition, so this is where all of a client's records
    are, as long as the topics keep their partition count (it never changes:
    ``docs/capacity.md``)."""
    return zlib.crc32(key) % partitions


def header_value(message: Message, name: str) -> bytes | None:
    """The value of a consumed record's header ``name``; None if it has none."""
    for header in message.headers() or ():  # (name, value) pairs
        if header[0] == name:
            value = header[1]
            return value if isinstance(value, bytes) else None
    return None


@dataclass(frozen=True, slots=True)
class Topics:
    region: str

    @property
    def requests(self) -> str:
        """MemeRequested and client queries, key = client_id; a query carries
        ``READS_HEADER``."""
        return f"{self.region}.requests"

    @property
    def purchases(self) -> str:
        """ClientRegistered, TokensPurchased, SubscriptionRequested, ErasureRequested,
        ApiKeyRotationRequested (with ``READS_HEADER``), key = client_id."""
        return f"{self.region}.purchases"

    @property
    def outcomes(self) -> str:
        """MemeGenerated / MemeFailed from the generator pools, key = client_id; those
        whose client was answered carry ``ANSWERED_HEADER``."""
        return f"{self.region}.outcomes"

    @property
    def ledger(self) -> str:
        """Append-only ledger entries, kept forever, key = client_id."""
        return f"{self.region}.ledger"

    @property
    def clients(self) -> str:
        """Compacted: client_id -> API key hash. Read by every API instance for auth."""
        return f"{self.region}.clients"

    @property
    def replies(self) -> str:
        """One partition per API instance; a request names its partition in reply_to."""
        return f"{self.region}.replies"

    @property
    def ledger_changelog(self) -> str:
        """Compacted changelog of the ledger processor's RocksDB state."""
        return f"{self.region}.ledger-state-changelog"

    @property
    def dead_letters(self) -> str:
        """Inputs the ledger processor could not decide, as they were, with headers naming
        where they came from and why; same key and partition as the input."""
        return f"{self.region}.ledger-dead-letters"

    @property
    def ledger_checkpoints(self) -> str:
        """Signed chain heads of the ledger's partitions (``maas audit checkpoint``), forever."""
        return f"{self.region}.ledger-checkpoints"

    def approved(self, kind: str) -> str:
        """Approved work for the generator pool of ``kind`` (standard or ai), key =
        client_id, partitioned by request id; each carries ``CLIENT_PARTITION_HEADER``."""
        return f"{self.region}.approved.{kind}"

    @property
    def ledger_inputs(self) -> list[str]:
        """Co-partitioned inputs of the ledger processor."""
        return [self.requests, self.purchases, self.outcomes]
