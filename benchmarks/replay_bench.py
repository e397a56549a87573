"""Replay speed: ledger entries folded per second on one core, against a JSON baseline.

A ledger of ``--entries`` entries (default 1,000,000) is made deterministically (seed
``--seed``) by the real fold: ``ledger.memory.MemoryLedger`` over synthetic inputs for
``--clients`` clients (registrations, purchases, some Memes AI subscriptions, meme
requests and their outcomes: mostly delivered, some generator failures, some deadline
expiries, and rejections when a client runs out of tokens). The entries are serialised
as the processor writes them (``schemas.events.dump``), so the bytes are what
``maas replay`` reads from the ledger topic. Then, in this one process and thread:

- **baseline**: ``json.loads`` of every entry's bytes, nothing else;
- **parse**: ``schemas.events.parse_entry`` (pydantic validation into the model);
- **replay**: ``parse_entry`` + ``ledger.replay.Replay.apply``, the path of ``maas
  replay`` (``evolve`` with its seq, balance and hash-chain checks, plus the request
  state machine);
- **apply**: ``Replay.apply`` alone over pre-parsed entries, to split the cost;
- **what-if**: ``parse_entry`` + ``ledger.whatif.WhatIf.apply`` at the list price, the
  path of ``maas replay --what-if-price``: every entry turned back into its input and
  re-decided by ``decide``; the run checks it reproduces every balance;
- with ``--kafka``, **maas replay**: the entries are produced to the ledger topic of a
  fresh region (the broker of ``KAFKA_BOOTSTRAP_SERVERS``, else a private local one, as
  in the other benchmarks) and ``maas.replay_cli.replay_ledger`` reads and folds them:
  the command's own path, consumer included. Its CPU time includes librdkafka's threads.

Rates are entries per second of CPU time (``time.process_time``), so the figure is per
core whatever else the machine is doing; wall-clock rates are printed beside them. The
run checks that the replayed balances equal the balances the fold produced, prints the
ratio to the baseline and whether 1M entries fit in 15 s, and writes
``benchmarks/results/replay-<timestamp>.json``. ``--profile`` adds a cProfile of the
replay path over the first 100k entries.

    python benchmarks/replay_bench.py [--entries 1000000] [--clients 10000] [--profile]
                                      [--kafka]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import itertools
import json
import pstats
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ledger.fold import LIST_PRICE, Expire  # noqa: E402
from ledger.memory import MemoryLedger  # noqa: E402
from ledger.replay import Replay  # noqa: E402
from ledger.whatif import WhatIf  # noqa: E402
from schemas.events import (  # noqa: E402
    ClientRegistered,
    MemeFailed,
    MemeGenerated,
    MemeRequested,
    SubscriptionRequested,
    TokensPurchased,
    dump,
    parse_entry,
)

RESULTS = REPO / "benchmarks" / "results"
TARGET_ENTRIES = 1_000_000
TARGET_SECONDS = 15.0
REGION = "bench"
START_MS = 1_764_000_000_000
DEADLINE_AFTER_MS = 5_000
IN_FLIGHT = 200  # requests waiting for their outcome while others arrive


def generate(n_entries: int, clients: int, seed: int) -> tuple[list[bytes], dict[str, int]]:
    """The first ``n_entries`` ledger entries of a synthetic day, and the final balances."""
    rng = random.Random(seed)
    ledger = MemoryLedger()
    ids = itertools.count(1)
    clock = itertools.count(START_MS, 7)  # ms; a few thousand inputs per simulated minute

    def next_id() -> str:
        return f"e{next(ids)}"

    def purchase(client: str) -> None:
        ledger.handle(
            TokensPurchased(
                event_id=next_id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=next(clock),
                purchase_id=f"p{next(ids)}",
                tokens=rng.choice((10, 50, 100, 500)),
                reply_to=0,
            )
        )

    names = [f"c{i:05d}" for i in range(clients)]
    for client in names:
        ledger.handle(
            ClientRegistered(
                event_id=next_id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=next(clock),
                api_key_sha256=hashlib.sha256(client.encode()).hexdigest(),
                reply_to=0,
            )
        )
        purchase(client)
        if rng.random() < 0.2:
            ledger.handle(
                SubscriptionRequested(
                    event_id=next_id(),
                    client_id=client,
                    region=REGION,
                    occurred_at_ms=next(clock),
                    active=True,
                    reply_to=0,
                )
            )

    pending: deque[tuple[str, str, str, int]] = deque()  # client, request id, kind, deadline
    while len(ledger.entries) < n_entries:
        client = names[min(int(rng.paretovariate(1.2)) - 1, clients - 1)]  # some are busy
        if rng.random() < 0.01:
            purchase(client)
        now_ms = next(clock)
        request_id = f"r{next(ids)}"
        decision = ledger.handle(
            MemeRequested(
                event_id=next_id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=now_ms,
                request_id=request_id,
                fingerprint=hashlib.sha256(request_id.encode()).hexdigest()[:16],
                lat=rng.uniform(-60, 70),
                lon=rng.uniform(-180, 180),
                query=rng.choice(("food", "cats", "monday", "coffee", "rain")),
                deadline_ms=now_ms + DEADLINE_AFTER_MS,
                reply_to=0,
            )
        )
        if decision.approved is not None:
            pending.append((client, request_id, decision.approved.kind, now_ms + DEADLINE_AFTER_MS))
        while len(pending) > IN_FLIGHT:
            _end(ledger, rng, next_id(), next(clock), *pending.popleft())
    balances = {e.client_id: e.balance_after for e in ledger.entries[:n_entries]}
    return [dump(e) for e in ledger.entries[:n_entries]], balances


def _end(
    ledger: MemoryLedger,
    rng: random.Random,
    event_id: str,
    now_ms: int,
    client: str,
    request_id: str,
    kind: str,
    deadline_ms: int,
) -> None:
    draw = rng.random()
    common = {"event_id": event_id, "client_id": client, "region": REGION}
    if draw < 0.95:
        ledger.handle(
            MemeGenerated(
                **common,
                occurred_at_ms=now_ms,
                request_id=request_id,
                meme_id=f"m{event_id}",
                kind=kind,
                template="drake",
                caption="when the ledger replays in time",
                image_key=hashlib.sha256(event_id.encode()).hexdigest(),
            )
        )
    elif draw < 0.98:
        ledger.handle(
            MemeFailed(
                **common, occurred_at_ms=now_ms, request_id=request_id, kind=kind, error="boom"
            )
        )
    else:
        ledger.handle(Expire(client, request_id, REGION, max(now_ms, deadline_ms)))


def measure(name: str, run: Callable[[], object], n: int, repeats: int) -> dict[str, Any]:
    cpu_runs, wall_runs = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        cpu_runs.append(time.process_time() - cpu)
        wall_runs.append(time.perf_counter() - wall)
    cpu_s, wall_s = min(cpu_runs), min(wall_runs)
    result = {
        "case": name,
        "cpu_seconds": round(cpu_s, 3),
        "wall_seconds": round(wall_s, 3),
        "rate_cpu": n / cpu_s,
        "rate_wall": n / wall_s,
    }
    print(
        f"{name:<10} cpu={cpu_s:7.2f}s wall={wall_s:7.2f}s "
        f"rate={n / cpu_s:>10,.0f}/s per core (wall {n / wall_s:,.0f}/s)",
        flush=True,
    )
    return result


Fold = TypeVar("Fold", Replay, WhatIf)


def fold_raw(raws: Sequence[bytes], fold: Fold) -> Fold:
    """Parse each entry's bytes and apply it, the path of ``maas replay``."""
    apply = fold.apply
    for raw in raws:
        apply(parse_entry(raw))
    return fold


def measure_apply(raws: Sequence[bytes], repeats: int) -> dict[str, object]:
    parsed = [parse_entry(r) for r in raws]  # freed on return
    return measure("apply", lambda: Replay().apply_all(parsed), len(raws), repeats)


def measure_kafka(raws: Sequence[bytes], balances: dict[str, int]) -> dict[str, object]:
    """Produce the entries to a fresh ledger topic, then time ``maas replay``'s fold."""
    import uuid

    from common import kafka, say
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from core.admin import delete_region_topics
    from core.settings import Settings
    from core.topics import Topics
    from maas.replay_cli import replay_ledger

    with kafka() as cluster:
        settings = Settings(
            region="bench" + uuid.uuid4().hex[:8], bootstrap_servers=cluster.bootstrap
        )
        topic = Topics(settings.region).ledger
        admin = AdminClient(settings.kafka_common())
        admin.create_topics([NewTopic(topic, settings.partitions, 1)])[topic].result()
        try:
            producer = Producer(
                {
                    **settings.kafka_common(),
                    "enable.idempotence": True,
                    "linger.ms": 20,
                    "compression.type": "lz4",
                }
            )
            started = time.perf_counter()
            for raw in raws:
                key = json.loads(raw)["client_id"].encode()
                while True:
                    try:
                        producer.produce(topic, raw, key)
                        break
                    except BufferError:
                        producer.poll(0.05)
                producer.poll(0)
            producer.flush()
            say(f"produced {len(raws)} entries in {time.perf_counter() - started:.1f}s")
            holder: list[Replay] = []
            result = measure(
                "maas replay",
                lambda: holder.append(replay_ledger(settings)),
                len(raws),
                1,
            )
            replay = holder[0]
            assert replay.violations == [], replay.violations[:3]
            assert {c: a.balance for c, a in replay.accounts.items()} == balances
            return result
        finally:
            delete_region_topics(cluster.bootstrap, settings.region)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=TARGET_ENTRIES)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--kafka", action="store_true", help="also time maas replay's path")
    parser.add_argument("--smoke", action="store_true", help="a few seconds: does it still run?")
    args = parser.parse_args()
    if args.smoke:
        args.entries, args.clients = 2_000, 50

    started = time.perf_counter()
    raws, balances = generate(args.entries, args.clients, args.seed)
    n = len(raws)
    megabytes = sum(map(len, raws)) / 1e6
    print(
        f"generated entries={n} clients={args.clients} bytes={megabytes:.0f}MB "
        f"in {time.perf_counter() - started:.1f}s",
        flush=True,
    )

    results = [
        measure("baseline", lambda: [json.loads(r) for r in raws], n, args.repeats),
        measure("parse", lambda: [parse_entry(r) for r in raws], n, args.repeats),
    ]
    holder: list[Replay] = []
    results.append(
        measure("replay", lambda: holder.append(fold_raw(raws, Replay())), n, args.repeats)
    )
    results.append(measure_apply(raws, args.repeats))

    replay = holder[-1]
    assert replay.violations == [], replay.violations[:3]
    assert {c: a.balance for c, a in replay.accounts.items()} == balances, "balances differ"

    baseline, replayed = results[0], results[2]
    ratio = replayed["rate_cpu"] / baseline["rate_cpu"]
    seconds_1m = TARGET_ENTRIES / replayed["rate_cpu"]
    fits = seconds_1m <= TARGET_SECONDS
    print(
        f"replay/baseline={ratio:.3f} 1M entries in {seconds_1m:.1f}s of one core: "
        f"{'fits' if fits else 'does NOT fit'} in {TARGET_SECONDS:.0f}s",
        flush=True,
    )

    whatifs: list[WhatIf] = []
    results.append(
        measure(
            "what-if", lambda: whatifs.append(fold_raw(raws, WhatIf(LIST_PRICE))), n, args.repeats
        )
    )
    redecided = {c: w.new_balance for c, w in whatifs[-1].clients.items()}
    assert redecided == balances, "re-deciding at the list price changed a balance"
    whatif_ratio = results[-1]["rate_cpu"] / replayed["rate_cpu"]
    print(f"what-if/replay={whatif_ratio:.3f}", flush=True)

    if args.kafka:
        results.append(measure_kafka(raws, balances))

    profile_text = ""
    if args.profile:
        sample = raws[:100_000]
        profiler = cProfile.Profile()
        profiler.enable()
        fold_raw(sample, Replay())
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        profile_text = out.getvalue()
        print(profile_text)

    from common import machine_description, timestamp  # the broker helpers are not needed

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"replay-{timestamp()}.json"
    path.write_text(
        json.dumps(
            {
                "benchmark": "replay",
                "machine": machine_description(),
                "python": sys.version.split()[0],
                "entries": n,
                "clients": args.clients,
                "seed": args.seed,
                "megabytes": round(megabytes, 1),
                "results": results,
                "ratio_replay_vs_baseline": ratio,
                "ratio_whatif_vs_replay": whatif_ratio,
                "seconds_for_1m": seconds_1m,
                "fits_target": fits,
                "profile": profile_text,
            },
            indent=2,
        )
    )
    print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
