"""The example analysis of ``docs/analysis.md``: DuckDB over ``maas export`` output.

    maas export --out exports/eu                # one folder per region
    python benchmarks/analysis_example.py exports/eu exports/us

prints three tables (requests per region per hour, top clients, refund rate) and draws
``docs/img/analysis-overview.png``. ``--demo DIR`` first writes a synthetic two-region day
into ``DIR/eu`` and ``DIR/us`` without a broker: inputs folded by the real ledger
(``MemoryLedger``) and written by the real export code (``maas.export_cli.export_table``),
with the load of each region following its local daytime. ``--smoke`` does the same with
a tiny day in a temporary folder (the image included), in seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import math
import random
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.topics import key_partition  # noqa: E402
from ledger.fold import Expire  # noqa: E402
from ledger.memory import MemoryLedger  # noqa: E402
from maas.export_cli import export_table  # noqa: E402
from schemas.events import (  # noqa: E402
    ClientRegistered,
    InputEvent,
    MemeFailed,
    MemeGenerated,
    MemeRequested,
    SubscriptionRequested,
    TokensPurchased,
    dump,
)

IMG = REPO / "docs" / "img"
DAY_START_MS = 1_764_028_800_000  # 2025-11-25T00:00:00Z
HOUR_MS = 3_600_000
PARTITIONS = 3

QUERIES = {
    "requests per region per hour": """
        SELECT region, date_trunc('hour', occurred_at) AS hour, count(*) AS requests
        FROM requests GROUP BY ALL ORDER BY region, hour""",
    "top clients": """
        SELECT client_id, region,
               count(*) FILTER (type = 'TokensCharged') AS memes_charged,
               sum(tokens) FILTER (type = 'TokensCredited') AS tokens_bought,
               count(*) FILTER (type = 'MemeRejected') AS rejected
        FROM ledger GROUP BY ALL ORDER BY memes_charged DESC LIMIT 10""",
    "refund rate": """
        SELECT region,
               count(*) FILTER (type = 'TokensCharged') AS charged,
               count(*) FILTER (type = 'TokensRefunded' AND reason = 1) AS generator_failed,
               count(*) FILTER (type = 'TokensRefunded' AND reason = 2) AS deadline_expired,
               round(count(*) FILTER (type = 'TokensRefunded')
                     / count(*) FILTER (type = 'TokensCharged'), 4) AS refund_rate
        FROM ledger GROUP BY ALL ORDER BY region""",
}


def views(con: duckdb.DuckDBPyConnection, exports: list[Path]) -> None:
    """One view per table over every export folder given (one per region)."""
    for table in ("ledger", "requests", "purchases", "outcomes"):
        paths = ", ".join(f"'{folder}/{table}/*/*.parquet'" for folder in exports)
        con.execute(
            f"CREATE OR REPLACE VIEW {table} AS "
            f"SELECT * FROM read_parquet([{paths}], hive_partitioning = true, union_by_name = true)"
        )


def analyse(exports: list[Path], image: Path) -> None:
    """Print the tables, draw the figure, and a last line: rows read and seconds taken."""
    import duckdb
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    started = time.perf_counter()
    con = duckdb.connect()
    views(con, exports)
    for title, sql in QUERIES.items():
        print(f"-- {title}")
        print(con.sql(sql))

    per_hour = con.sql(QUERIES["requests per region per hour"]).fetchall()
    top = con.sql(QUERIES["top clients"]).fetchall()
    refunds = con.sql(
        """SELECT date_trunc('hour', occurred_at) AS hour,
                  count(*) FILTER (type = 'TokensRefunded')
                  / count(*) FILTER (type = 'TokensCharged') AS refund_rate
           FROM ledger GROUP BY ALL HAVING count(*) FILTER (type = 'TokensCharged') > 0
           ORDER BY hour"""
    ).fetchall()

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for region in sorted({r for r, _, _ in per_hour}):
        rows = [(h, n) for r, h, n in per_hour if r == region]
        axes[0].plot([h.hour for h, _ in rows], [n for _, n in rows], marker=".", label=region)
    axes[0].set_title("meme requests per hour")
    axes[0].set_xlabel("hour of the day (UTC)")
    axes[0].legend(title="region")
    axes[1].barh([c for c, *_ in top][::-1], [n for _, _, n, *_ in top][::-1])
    axes[1].set_title("top 10 clients: memes charged")
    axes[2].plot([h.hour for h, _ in refunds], [100 * rate for _, rate in refunds], marker=".")
    axes[2].set_title("refund rate, % of charges (both regions)")
    axes[2].set_xlabel("hour of the day (UTC)")
    axes[2].set_ylim(bottom=0)
    for ax in (axes[0], axes[2]):
        ax.set_xticks(range(0, 24, 3))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    image.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(image, dpi=90)
    print(f"wrote {image}")
    ((entries,),) = con.sql("SELECT count(*) FROM ledger").fetchall()
    print(
        f"analysis: regions={len(exports)} ledger_entries={entries} "
        f"seconds={time.perf_counter() - started:.2f}"
    )


# --------------------------------------------------------------------------- demo data


def demo_region(
    root: Path, region: str, utc_offset_h: int, clients: int, seed: int, load_scale: float = 1.0
) -> None:
    """A day of one region through the real fold, exported with the real writer;
    ``load_scale`` scales the requests per hour."""
    rng = random.Random(seed)
    ledger = MemoryLedger()
    ids = itertools.count(1)
    inputs: dict[str, list[tuple[int, int, bytes]]] = {"requests": [], "purchases": []}
    inputs["outcomes"] = []
    offsets: dict[tuple[str, int], int] = {}

    def record(topic: str, event: InputEvent) -> None:
        ledger.handle(event)
        p = key_partition(event.client_id.encode(), PARTITIONS)
        offset = offsets.get((topic, p), 0)
        offsets[topic, p] = offset + 1
        inputs[topic].append((p, offset, dump(event)))

    def eid() -> str:
        return f"{region}-{next(ids)}"

    names = [f"{region}-client-{i:04d}" for i in range(clients)]
    for i, client in enumerate(names):
        at = DAY_START_MS + i * 1000
        common = {"client_id": client, "region": region, "reply_to": 0}
        record(
            "purchases",
            ClientRegistered(
                event_id=eid(),
                occurred_at_ms=at,
                api_key_sha256=hashlib.sha256(client.encode()).hexdigest(),
                **common,
            ),
        )
        tokens = rng.choice((20, 50, 100, 500))
        record(
            "purchases",
            TokensPurchased(
                event_id=eid(), occurred_at_ms=at + 1, purchase_id=eid(), tokens=tokens, **common
            ),
        )
        if rng.random() < 0.15:
            record(
                "purchases",
                SubscriptionRequested(event_id=eid(), occurred_at_ms=at + 2, active=True, **common),
            )

    pending: deque[tuple[str, str, str, int]] = deque()
    for hour in range(24):
        local = (hour + utc_offset_h) % 24
        busy = max(0.0, math.sin(math.pi * (local - 7) / 15))  # 07:00-22:00
        load = load_scale * (40 + 360 * busy)
        failing = 0.10 if hour == 14 else 0.02  # an hour with a flaky generator
        for _ in range(int(load * rng.uniform(0.85, 1.15))):
            at = DAY_START_MS + hour * HOUR_MS + rng.randrange(HOUR_MS)
            client = names[min(int(rng.paretovariate(1.1)) - 1, clients - 1)]
            request_id = eid()
            before = len(ledger.entries)
            record(
                "requests",
                MemeRequested(
                    event_id=eid(),
                    client_id=client,
                    region=region,
                    occurred_at_ms=at,
                    request_id=request_id,
                    fingerprint=hashlib.sha256(request_id.encode()).hexdigest()[:16],
                    lat=rng.uniform(-50, 60),
                    lon=rng.uniform(-120, 150),
                    query=rng.choice(("food", "cats", "monday", "coffee", "rain", "deploy")),
                    deadline_ms=at + 5000,
                    reply_to=0,
                ),
            )
            entry = ledger.entries[before] if len(ledger.entries) > before else None
            if entry is not None and entry.type == "TokensCharged":
                pending.append((client, request_id, entry.kind, at))
            elif entry is not None and rng.random() < 0.2:  # out of tokens: some buy more
                record(
                    "purchases",
                    TokensPurchased(
                        event_id=eid(),
                        client_id=client,
                        region=region,
                        occurred_at_ms=at + 1,
                        purchase_id=eid(),
                        tokens=100,
                        reply_to=0,
                    ),
                )
            while pending:
                client, request_id, kind, at = pending.popleft()
                end = {"client_id": client, "region": region, "request_id": request_id}
                draw = rng.random()
                if draw < failing:
                    record(
                        "outcomes",
                        MemeFailed(
                            event_id=eid(), occurred_at_ms=at + 900, kind=kind, error="x", **end
                        ),
                    )
                elif draw < failing + 0.01:
                    ledger.handle(Expire(client, request_id, region, at + 7000))
                else:
                    record(
                        "outcomes",
                        MemeGenerated(
                            event_id=eid(),
                            occurred_at_ms=at + 700,
                            meme_id=eid(),
                            kind=kind,
                            template="drake",
                            caption="demo",
                            image_key="0" * 64,
                            **end,
                        ),
                    )
    entries = []
    for e in ledger.entries:
        p = key_partition(e.client_id.encode(), PARTITIONS)
        offset = offsets.get(("ledger", p), 0)
        offsets["ledger", p] = offset + 1
        entries.append((p, offset, dump(e)))
    export_table(entries, "ledger", root / region)
    for table, records in inputs.items():
        export_table(records, table, root / region)
    print(f"demo region={region} entries={len(entries)} -> {root / region}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exports", nargs="*", type=Path, help="maas export folders")
    parser.add_argument("--demo", type=Path, help="write a synthetic two-region day here first")
    parser.add_argument("--image", type=Path, default=IMG / "analysis-overview.png")
    parser.add_argument("--smoke", action="store_true", help="a tiny demo day, in seconds")
    args = parser.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory() as tmp:
            demo = Path(tmp) / "demo"
            demo_region(demo, "eu", 1, clients=20, seed=1, load_scale=0.05)
            demo_region(demo, "us", -5, clients=15, seed=2, load_scale=0.05)
            analyse([demo / "eu", demo / "us"], Path(tmp) / "overview.png")
        return 0
    exports = list(args.exports)
    if args.demo:
        demo_region(args.demo, "eu", 1, clients=400, seed=1)
        demo_region(args.demo, "us", -5, clients=300, seed=2)
        exports += [args.demo / "eu", args.demo / "us"]
    if not exports:
        parser.error("give export folders or --demo DIR")
    analyse(exports, args.image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
