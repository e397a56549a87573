"""The API-key table: sha256(api key) -> client_id, kept in memory, fed by Kafka.

The ledger processor writes every ``AccountOpened`` and ``ApiKeyRotated`` to the
compacted topic ``<region>.clients`` (key = client_id, so compaction keeps the client's
latest key). Each API instance reads the whole topic from the beginning (group-less
``assign`` of every partition, ``read_committed``) and keeps reading, so authentication
is one dictionary lookup: no call, no I/O on the hot path. A rotated key replaces the
old one at once on the instance that rotated it, and on the others once its record
arrives, a few milliseconds after the ledger committed it. A replaced key still in its
grace (``ApiKeyRotated.replaced_keys``) stays in the table with its end, which the
lookup compares with the clock.

Only hashes are stored. Looking a key up by its hash is safe against timing attacks:
the time a dict lookup takes depends on the hash, which an attacker cannot steer
towards a stored one without knowing a key.

Until every partition has been read to its end once, the table is ``loaded == False``
and an unknown key is answered "not ready" (503), not "unauthorized" (401): a key we
have not read yet is not a wrong key.

Several API instances: a registration is known at once on the instance that made it
(``add``), and on the others once its record arrives, a few milliseconds after the
ledger committed it, which is before the client was handed the key. A client whose
next call reaches another instance in between must not be told its key is wrong, so
an unknown key waits up to ``PROPAGATION_WAIT_S`` for the table to learn it
(``client_for_waiting``) before it is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from pydantic import ValidationError

from core.batching import IDLE_WAIT_S, take_batch
from core.clock import now_ms
from core.settings import Settings
from core.topics import Topics
from schemas.events import AccountOpened, ApiKeyRotated, parse_entry

log = logging.getLogger(__name__)

PROPAGATION_WAIT_S = 1.0
# For the watermarks of all partitions together: each ask waits up to what is left, so a
# leader that does not answer (down, paused) holds the table up once, not once per
# partition it leads; partitions not asked in time are read to their end instead.
EMPTY_PROBE_S = 2.0


def key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class KeyTable:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = Topics(settings.region).clients
        self._client_by_hash: dict[str, str] = {}
        self._hashes_by_client: dict[str, tuple[str, ...]] = {}  # every key that works
        self._until_by_hash: dict[str, int] = {}  # replaced keys in a grace: its end, ms
        self._lock = threading.Lock()  # guards the two maps across reader and loop
        self._loaded = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None  # set on the loop when a key is added

    # --- queries (event loop) ----------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    def wait_loaded(self, timeout_s: float) -> bool:
        """Block until every partition has been read to its end once, at most ``timeout_s``."""
        return self._loaded.wait(timeout_s)

    def client_for(self, api_key: str) -> str | None:
        # A plain dict read is atomic under the GIL; no lock needed on the hot path.
        digest = key_hash(api_key)
        client_id = self._client_by_hash.get(digest)
        if client_id is not None and self._until_by_hash:
            until_ms = self._until_by_hash.get(digest)
            if until_ms is not None and now_ms() >= until_ms:
                return None
        return client_id

    def grace_ends_ms(self, api_key: str) -> int | None:
        """When a replaced key in its grace stops working (ms); None for any other key."""
        if not self._until_by_hash:
            return None
        return self._until_by_hash.get(key_hash(api_key))

    async def client_for_waiting(self, api_key: str) -> str | None:
        """``client_for``, but an unknown key waits up to ``PROPAGATION_WAIT_S`` for a
        registration made through another instance to arrive (module docstring)."""
        client_id = self.client_for(api_key)
        if client_id is not None or self._changed is None or not self.loaded:
            return client_id  # not loaded: the caller answers "not ready" at once
        deadline = asyncio.get_running_loop().time() + PROPAGATION_WAIT_S
        while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
            self._changed.clear()
            client_id = self.client_for(api_key)
            if client_id is not None:
                return client_id
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                break
        return self.client_for(api_key)

    def __len__(self) -> int:
        return len(self._client_by_hash)

    def add(
        self, api_key_sha256: str, client_id: str, replaced: Sequence[tuple[str, int]] = ()
    ) -> None:
        """The client's keys from now on: ``api_key_sha256``, and each replaced key in
        ``replaced`` until its end (ms). Known at once on this instance after a
        registration or rotation, before the topic says so."""
        with self._lock:
            self._forget(client_id)
            self._client_by_hash[api_key_sha256] = client_id
            for digest, until_ms in replaced:
                self._client_by_hash[digest] = client_id
                self._until_by_hash[digest] = until_ms
            self._hashes_by_client[client_id] = (api_key_sha256, *(d for d, _ in replaced))
        if self._loop is not None and self._changed is not None and self.loaded:
            # The reader thread's news, handed to the loop, which alone touches the event
            # (lookups wait only once the table is loaded: no wake-ups for the first read).
            self._loop.call_soon_threadsafe(self._changed.set)

    def remove(self, client_id: str) -> None:
        with self._lock:
            self._forget(client_id)

    def _forget(self, client_id: str) -> None:
        for digest in self._hashes_by_client.pop(client_id, ()):
            self._client_by_hash.pop(digest, None)
            self._until_by_hash.pop(digest, None)

    # --- life cycle ------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._changed = loop, asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="maas-api-keys", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        consumer = Consumer(
            {
                **self.settings.kafka_common(),
                # Required by the client, never joined or committed: every instance
                # reads every partition.
                "group.id": f"{self.settings.region}.api-{self.settings.api_instance}.keys",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,  # tells us when the first read-through ends
            }
        )
        try:
            partitions, at_end = self._assign(consumer)
            self._reached(at_end, partitions)
            while not self._stopping.is_set():
                for message in take_batch(consumer, 500, IDLE_WAIT_S):
                    error = message.error()
                    if error is not None:
                        partition = message.partition()
                        if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                            at_end.add(partition)
                            self._reached(at_end, partitions)
                        else:
                            log.warning("key table consumer error=%s", error.str())
                        continue
                    self._apply(message.key(), message.value())
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> tuple[set[int], set[int]]:
        """Wait for the topic to exist, then read all of it from the start. Returns its
        partitions and those of them that are empty.

        An empty partition's end-of-partition event comes only after fetches that the
        broker holds for fetch.wait.max.ms: a fresh region's table took 1.1 s to load.
        Its watermarks say at once that there is nothing to read, if asked before the
        assignment's first fetch (after it, each answer waits behind a held fetch)."""
        while not self._stopping.is_set():
            try:
                metadata = consumer.list_topics(self.topic, timeout=2.0)
                topic = metadata.topics.get(self.topic)
                if topic is not None and topic.error is None and topic.partitions:
                    numbers = set(topic.partitions)
                    empty = self.empty_partitions(consumer, numbers)
                    consumer.assign(
                        [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in numbers]
                    )
                    log.info("key table assigned topic=%s partitions=%d", self.topic, len(numbers))
                    return numbers, empty
            except KafkaException as exc:
                log.warning("key table topic not reachable error=%s", exc.args[0].str())
            self._stopping.wait(0.5)
        return set(), set()

    def empty_partitions(self, consumer: Consumer, partitions: set[int]) -> set[int]:
        """Those of ``partitions`` whose watermarks say, within ``EMPTY_PROBE_S`` in all,
        that they hold nothing; of the others, their end-of-partition events will tell."""
        deadline = time.monotonic() + EMPTY_PROBE_S
        empty: set[int] = set()
        for partition in sorted(partitions):
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                break
            try:
                marks = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=left_s
                )
            except KafkaException:
                continue
            if marks is not None and marks[0] == marks[1]:
                empty.add(partition)
        return empty

    def _reached(self, at_end: set[int], partitions: set[int]) -> None:
        if partitions and not self.loaded and at_end >= partitions:
            self._loaded.set()
            log.info("key table loaded clients=%d", len(self))

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:  # tombstone: the client's key was revoked
            if key is not None:
                self.remove(key.decode())
            return
        try:
            entry = parse_entry(value)
        except ValidationError as exc:
            log.error("malformed clients record key=%r error=%s", key, exc.errors()[0]["msg"])
            return
        if isinstance(entry, AccountOpened):
            self.add(entry.api_key_sha256, entry.client_id)
        elif isinstance(entry, ApiKeyRotated):
            replaced = [(key.api_key_sha256, key.valid_until_ms) for key in entry.replaced_keys]
            self.add(entry.api_key_sha256, entry.client_id, replaced)
