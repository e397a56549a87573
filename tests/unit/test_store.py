"""The processor's state store: a real RocksDB with the open transaction's overlay."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from rocksdict import Options, Rdict

from ledger.state import STATE_FORMAT_VERSION
from processors.ledger.store import FORMAT_KEY, Overlay, PartitionStore

KEYS = st.sampled_from([b"r/a/1", b"r/a/2", b"r/a/3", b"r/b/1", b"p/a/1", b"q/a/2", b"a/a"])
VALUES = st.binary(min_size=1, max_size=4)


def test_scan_merges_uncommitted_writes_and_deletes(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    store.apply([(b"r/a/1", b"one"), (b"r/a/3", b"three"), (b"r/b/1", b"b")], changelog_offset=2)
    overlay = Overlay()
    overlay.put(0, b"r/a/2", b"two")  # new key between stored ones
    overlay.put(0, b"r/a/3", None)  # deleted in the open transaction
    overlay.put(0, b"r/a/1", b"ONE")  # rewritten

    found = [(k, v) for k, v in overlay.scan(0, store, b"r/a/") if k.startswith(b"r/a/")]

    assert found == [(b"r/a/1", b"ONE"), (b"r/a/2", b"two")]
    store.close()


@settings(max_examples=200, deadline=None)
@given(
    stored=st.dictionaries(KEYS, VALUES),
    written=st.dictionaries(KEYS, st.none() | VALUES),
    start=KEYS,
)
def test_scan_equals_a_scan_of_the_merged_dict(
    tmp_path_factory, stored: dict[bytes, bytes], written: dict[bytes, bytes | None], start: bytes
) -> None:
    store = PartitionStore(tmp_path_factory.mktemp("p"))
    store.apply(stored.items(), changelog_offset=0)
    overlay = Overlay()
    for key, value in written.items():
        overlay.put(0, key, value)
    merged = {**stored, **written}
    expected = sorted((k, v) for k, v in merged.items() if v is not None and k >= start)

    found = [(k, v) for k, v in overlay.scan(0, store, start) if not k.startswith(b"__")]

    assert found == expected
    store.close()


def test_table_files_carry_a_bloom_filter_after_a_restart(tmp_path: Path) -> None:
    """Lookups of absent keys (every new request id) skip a table file by its filter; a
    store opened again keeps it (rocksdict would take the stored options instead)."""
    PartitionStore(tmp_path / "p0").close()
    PartitionStore(tmp_path / "p0").close()

    newest = max((tmp_path / "p0").glob("OPTIONS-*"), key=lambda p: int(p.name.split("-")[1]))

    assert "filter_policy=bloomfilter" in newest.read_text()


def test_a_store_written_without_filters_is_read_as_it_is(tmp_path: Path) -> None:
    """A store of the same format written before the filters keeps its records: the old
    table files are read without one, new ones get one."""
    old = Rdict(str(tmp_path / "p0"), options=Options(raw_mode=True))
    old.put(FORMAT_KEY, str(STATE_FORMAT_VERSION).encode())
    old.put(b"a/x", b"account")
    old.flush()
    old.close()

    store = PartitionStore(tmp_path / "p0")

    assert store.get(b"a/x") == b"account"
    assert store.get(b"a/y") is None
    store.close()
