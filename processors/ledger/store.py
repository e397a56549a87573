"""The ledger processor's state: one RocksDB per input partition, plus a write overlay.

RocksDB is outside the Kafka transaction (pitfall 8, docs/architecture.md). So the database is
written only *after* a transaction commits, together with the highest changelog offset
that commit covered (reserved key ``__changelog_offset``). It can therefore be behind
the changelog, never ahead of it: on assignment, ``restore`` replays the changelog from
that offset to its end, and the store is exact again.

Within a transaction, decisions read their own writes through ``Overlay``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from rocksdict import BlockBasedOptions, Options, Rdict, WriteBatch

from ledger.state import PENDING_PREFIX, STATE_FORMAT_VERSION, parse_pending

log = logging.getLogger(__name__)

CHANGELOG_OFFSET_KEY = b"__changelog_offset"
FORMAT_KEY = b"__format_version"
BLOOM_BITS_PER_KEY = 10  # ~1% false positives


def _options() -> Options:
    """Raw bytes, and a bloom filter in every table file: most lookups are of a key that
    is not there (each new request's id), and without a filter RocksDB reads a block of
    every level to say so (4 us against 0.3, measured in ``docs/performance.md``)."""
    table = BlockBasedOptions()
    table.set_bloom_filter(BLOOM_BITS_PER_KEY, False)
    options = Options(raw_mode=True)
    options.set_block_based_table_factory(table)
    return options


def _open(path: Path) -> Rdict:
    # The default column family named with its options: otherwise rocksdict reopens a
    # store with the column family options it finds in the store's OPTIONS file, which
    # come back without the filter.
    return Rdict(str(path), options=_options(), column_families={"default": _options()})


class PartitionStore:
    """The committed state of one partition, on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._db = _open(path)
        stored = self._db.get(FORMAT_KEY)
        if stored is not None and int(stored) != STATE_FORMAT_VERSION:
            # An old format is not migrated in place: the changelog rebuilds it.
            log.warning("state format changed path=%s stored=%s; rebuilding", path, stored)
            self.destroy()
            path.mkdir(parents=True)
            self._db = _open(path)
        self._db.put(FORMAT_KEY, str(STATE_FORMAT_VERSION).encode())

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(key)

    @property
    def changelog_offset(self) -> int:
        """Offset of the last changelog record applied here; -1 when none."""
        raw = self._db.get(CHANGELOG_OFFSET_KEY)
        return -1 if raw is None else int(raw)

    def apply(self, writes: Iterable[tuple[bytes, bytes | None]], changelog_offset: int) -> None:
        """Write committed records and the changelog offset they reach, atomically."""
        batch = WriteBatch(raw_mode=True)
        for key, value in writes:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(CHANGELOG_OFFSET_KEY, str(changelog_offset).encode())
        self._db.write(batch)

    def scan(self, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) in key order from ``start`` on."""
        for key, value in self._db.items(from_key=start):
            # Opened in raw mode: every key and value is bytes (rocksdict's types allow
            # any scalar for its other modes).
            assert isinstance(key, bytes) and isinstance(value, bytes)
            yield key, value

    def pending(self) -> Iterator[tuple[str, str, int]]:
        """(client_id, request_id, deadline_ms) of every charged request without outcome."""
        for key, value in self.scan(PENDING_PREFIX):
            if not key.startswith(PENDING_PREFIX):
                break
            yield parse_pending(key, value)

    def close(self) -> None:
        self._db.close()

    def destroy(self) -> None:
        """Close and delete the files: the changelog is the source of truth."""
        self._db.close()
        shutil.rmtree(self.path)


class Overlay:
    """Uncommitted writes of the open transaction, read before the partition stores."""

    def __init__(self) -> None:
        self.writes: dict[int, dict[bytes, bytes | None]] = {}

    def get(self, partition: int, store: PartitionStore, key: bytes) -> bytes | None:
        pending = self.writes.get(partition)
        if pending is not None and key in pending:
            return pending[key]
        return store.get(key)

    def scan(
        self, partition: int, store: PartitionStore, start: bytes
    ) -> Iterator[tuple[bytes, bytes]]:
        """The store's records from ``start`` on, with this transaction's writes merged
        in (a write wins over the stored value; a delete hides it)."""
        writes = sorted((k, v) for k, v in self.writes.get(partition, {}).items() if k >= start)
        i = 0
        for key, value in store.scan(start):
            while i < len(writes) and writes[i][0] <= key:
                written_key, written = writes[i]
                i += 1
                if written is not None:
                    yield written_key, written
                if written_key == key:
                    break
            else:
                yield key, value
        for written_key, written in writes[i:]:
            if written is not None:
                yield written_key, written

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        self.writes.setdefault(partition, {})[key] = value

    def clear(self) -> None:
        self.writes.clear()
