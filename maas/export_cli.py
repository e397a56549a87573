"""``maas export``: the ledger and the raw inputs as Parquet (or CSV) for analysis.

Writes one table per topic, partitioned by the UTC day of each event's
``occurred_at_ms``, in the layout DuckDB, pyarrow and Spark read as hive partitions::

    DIR/ledger/day=2026-11-25/part-00000.parquet     every entry, all fields flattened
    DIR/requests/day=.../part-*.parquet              MemeRequested (lat, lon, query)
    DIR/purchases/day=.../part-*.parquet             registrations, purchases, subscriptions
    DIR/outcomes/day=.../part-*.parquet              MemeGenerated and MemeFailed

Every row also has the Kafka ``partition`` and ``offset`` it was read from and
``occurred_at`` (a UTC timestamp); ``day`` comes from the folder name. A field a type
does not have is null. Queries (``AccountQueried``, ``RequestQueried``) are not exported,
and neither is the API key hash of a registration. Topics are read ``read_committed``,
from the start to their current end, like ``maas replay``. A table is replaced whole:
``DIR/<table>`` is removed first, so an export is a snapshot; but only if it holds an
earlier export (``day=*`` folders of ``part-*`` files, or nothing). Any other folder of
that name is left alone and the export refused before anything is written: ``--out .``
in this repository would otherwise have removed the ``ledger`` package.

    duckdb -c "SELECT day, count(*) FROM 'DIR/ledger/*/*.parquet' GROUP BY day"
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core import logs
from core.settings import Settings
from core.topic_reader import position_of, read_topic
from core.topics import Topics
from maas.arguments import folder

ROWS_PER_FILE = 200_000
# Each table's columns and their types, as names of pyarrow type factories.
COMMON = [
    ("partition", "int32"),
    ("offset", "int64"),
    ("event_id", "string"),
    ("type", "string"),
    ("schema_version", "int32"),
    ("client_id", "string"),
    ("region", "string"),
    ("occurred_at_ms", "int64"),
    ("occurred_at", "timestamp"),
    ("causation_id", "string"),
]
TABLES: dict[str, list[tuple[str, str]]] = {
    "ledger": [
        *COMMON,
        ("seq", "int64"),
        ("balance_after", "int64"),
        ("prev_hash", "string"),
        ("api_key_sha256", "string"),
        ("purchase_id", "string"),
        ("request_id", "string"),
        ("tokens", "int64"),
        ("kind", "string"),
        ("reason", "int32"),
        ("meme_id", "string"),
        ("template", "string"),
        ("caption", "string"),
        ("image_key", "string"),
        ("active", "bool"),
        ("until_ms", "int64"),
        ("requests_erased", "int64"),
        ("first_request_id", "string"),
        ("last_request_id", "string"),
    ],
    "requests": [
        *COMMON,
        ("request_id", "string"),
        ("fingerprint", "string"),
        ("lat", "float64"),
        ("lon", "float64"),
        ("query", "string"),
        ("deadline_ms", "int64"),
        ("reply_to", "int32"),
    ],
    "purchases": [
        *COMMON,
        ("name", "string"),
        ("purchase_id", "string"),
        ("tokens", "int64"),
        ("active", "bool"),
        ("until_ms", "int64"),
        ("reply_to", "int32"),
    ],
    "outcomes": [
        *COMMON,
        ("request_id", "string"),
        ("kind", "string"),
        ("meme_id", "string"),
        ("template", "string"),
        ("caption", "string"),
        ("image_key", "string"),
        ("error", "string"),
    ],
}
# Input types exported from each input topic; other types there are skipped.
INPUT_TYPES = {
    "requests": {"MemeRequested"},
    "purchases": {"ClientRegistered", "TokensPurchased", "SubscriptionRequested"},
    "outcomes": {"MemeGenerated", "MemeFailed"},
}


def register(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="write the ledger and inputs as Parquet or CSV")
    _arguments(export)
    export.set_defaults(func=_export)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=folder, help="folder to write the tables to")
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument(
        "--tables",
        default=",".join(TABLES),
        help=f"comma-separated subset of {','.join(TABLES)}",
    )


def day_of(occurred_at_ms: int) -> str:
    return datetime.fromtimestamp(occurred_at_ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def row_of(partition: int, offset: int, event: dict[str, Any]) -> dict[str, Any]:
    """A flat row: the event's fields plus where it was read from."""
    return {
        **event,
        "partition": partition,
        "offset": offset,
        "occurred_at": event["occurred_at_ms"],  # ms; typed as a timestamp on write
    }


@dataclass
class TableWriter:
    """Buffers rows per day and writes a part file per ``ROWS_PER_FILE`` rows."""

    root: Path
    name: str
    fmt: str
    rows: int = 0
    files: list[Path] = field(default_factory=list)
    _buffers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _parts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import pyarrow as pa

        types = {
            "string": pa.string(),
            "int32": pa.int32(),
            "int64": pa.int64(),
            "float64": pa.float64(),
            "bool": pa.bool_(),
            "timestamp": pa.timestamp("ms", tz="UTC"),
        }
        self.schema = pa.schema([(col, types[kind]) for col, kind in TABLES[self.name]])
        table = self.root / self.name
        _refuse_unless_replaceable(table)
        shutil.rmtree(table, ignore_errors=True)

    def add(self, row: dict[str, Any]) -> None:
        day = day_of(row["occurred_at_ms"])
        buffer = self._buffers.setdefault(day, [])
        buffer.append(row)
        self.rows += 1
        if len(buffer) >= ROWS_PER_FILE:
            self._flush(day)

    def close(self) -> list[Path]:
        for day in list(self._buffers):
            self._flush(day)
        return self.files

    def _flush(self, day: str) -> None:
        import pyarrow as pa

        rows = self._buffers.pop(day, [])
        if not rows:
            return
        columns = {col: [r.get(col) for r in rows] for col in self.schema.names}
        table = pa.Table.from_pydict(columns, schema=self.schema)
        folder = self.root / self.name / f"day={day}"
        folder.mkdir(parents=True, exist_ok=True)
        part = self._parts.get(day, 0)
        self._parts[day] = part + 1
        path = folder / f"part-{part:05d}.{self.fmt}"
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, path, compression="zstd")
        else:
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, path)
        self.files.append(path)


def _refuse_unless_replaceable(table: Path) -> None:
    """A table's folder may be replaced if absent or an earlier export: ``day=*``
    folders of ``part-*`` files."""
    if not _replaceable(table):
        raise ValueError(f"{table} is not an earlier export: not replaced; choose another --out")


def _replaceable(table: Path) -> bool:
    if not table.exists():
        return True
    if not table.is_dir():
        return False
    return all(
        day.is_dir()
        and day.name.startswith("day=")
        and all(part.is_file() and part.name.startswith("part-") for part in day.iterdir())
        for day in table.iterdir()
    )


def export_table(
    records: Iterable[tuple[int, int, bytes]], name: str, root: Path, fmt: str = "parquet"
) -> TableWriter:
    """Write ``(partition, offset, value)`` records of one topic as table ``name``."""
    writer = TableWriter(root, name, fmt)
    wanted = INPUT_TYPES.get(name)
    for partition, offset, value in records:
        event = json.loads(value)
        if wanted is not None and event.get("type") not in wanted:
            continue
        writer.add(row_of(partition, offset, event))
    writer.close()
    return writer


def export(
    settings: Settings, root: Path, fmt: str = "parquet", tables: Iterable[str] = tuple(TABLES)
) -> dict[str, int]:
    """Export the region's topics; returns {table: rows written}."""
    topics = Topics(settings.region)
    names = {
        "ledger": topics.ledger,
        "requests": topics.requests,
        "purchases": topics.purchases,
        "outcomes": topics.outcomes,
    }
    for name in tables:
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}; expected one of {', '.join(TABLES)}")
        _refuse_unless_replaceable(root / name)  # all checked before any is replaced
    counts = {}
    for name in tables:
        started = time.monotonic()
        writer = export_table(_records(settings, names[name]), name, root, fmt)
        seconds = time.monotonic() - started
        counts[name] = writer.rows
        print(
            f"table={name} rows={writer.rows} files={len(writer.files)} seconds={seconds:.2f} "
            f"rate={writer.rows / max(seconds, 1e-9):,.0f}/s",
            file=sys.stderr,
        )
    return counts


def _records(settings: Settings, topic: str) -> Iterator[tuple[int, int, bytes]]:
    for msg in read_topic(settings, topic):
        _, partition, offset = position_of(msg)
        yield partition, offset, msg.value() or b""


def _export(args: argparse.Namespace) -> int:
    logs.configure("export")
    settings = Settings.from_env()
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    try:
        export(settings, args.out, args.format, tables)
    except ValueError as exc:
        print(f"maas export: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m maas.export_cli``: the same command without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="maas export", description=__doc__.split("\n\n")[0])
    _arguments(parser)
    return _export(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
