"""The ledger processor alone: decisions per second, with and without transactions.

A fresh region's input topics are pre-filled through a plain idempotent producer with
``--clients`` registrations + purchases and ``--requests`` ``MemeRequested`` events
(round-robin over the clients, deadlines an hour away so no refund timer fires, enough
tokens for every request: each one is charged). No API and no generator run. Then:

(a) **transactional**: the real ``LedgerProcessor``, as ``maas processor`` in a
    subprocess. Measured from its start of consumption (the ``partitions assigned`` line
    of its log, after state restore) until the group's committed offsets (polled with
    ``AdminClient.list_consumer_group_offsets`` every ``--poll-ms``) reach the end of
    the requests topic. Its output is read back (``read_committed``) to check that every
    request was charged and to count the transaction markers on the ledger topic.
(b) **at least once**: the same fold in a loop of this file: the same consumer
    settings and group commit (``processors.batching.take_batch`` with the same
    ``max_batch_size`` and ``commit_interval_ms``), ``ledger.fold.decide`` against a dict,
    the same outputs produced by a non-transactional idempotent producer to a shadow
    region's topics, then ``flush`` and a synchronous ``consumer.commit`` per batch.
(c) **pure fold**: ``MemoryLedger.handle`` over the pre-parsed events, in memory: the
    upper bound. (c') adds what the processor does per message besides Kafka: JSON
    parse of the input and serialization of every output.

Registrations are folded by (a) and (b) in a first phase, before the requests are
produced, so that the measured phase is requests only. Prints the rates, the ratios,
batch sizes and commit counts; writes ``benchmarks/results/processor-<timestamp>.json``
and ``docs/img/processor-rates.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from common import (
    IMG,
    RESULTS,
    CpuMeter,
    Region,
    delete_topics,
    kafka,
    machine_description,
    percentile,
    say,
    stop_on_sigterm,
    timestamp,
)
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from api.routes.memes import fingerprint
from core.admin import ensure_topics
from core.settings import Settings
from core.topics import Topics
from ledger.fold import Decision, decide
from ledger.memory import MemoryLedger
from ledger.state import KeyValueState, record_writes
from processors.batching import take_batch
from processors.ledger.processor import group_id
from schemas.events import (
    AccountOpened,
    ClientRegistered,
    InputEvent,
    MemeRequested,
    TokensPurchased,
    dump,
    parse_input,
)

QUERIES = ["food", "cats", "dogs", "monday", "coffee", "kafka", "rain", "pizza", "deadline"]
PROGRESS_EVERY = 5_000
WAIT_TIMEOUT_S = 900


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------- inputs


def make_inputs(
    region: str, clients: int, requests: int, seed: int = 7
) -> tuple[list[InputEvent], list[MemeRequested]]:
    rng = random.Random(seed)
    at = now_ms()
    ids = [f"bench-{i:05d}-{uuid.uuid4().hex[:8]}" for i in range(clients)]
    per_client = -(-requests // clients)
    setup: list[InputEvent] = []
    for i, client_id in enumerate(ids):
        envelope = {"client_id": client_id, "region": region, "occurred_at_ms": at}
        setup.append(
            ClientRegistered(
                **envelope,
                event_id=uuid.uuid4().hex,
                api_key_sha256=hashlib.sha256(os.urandom(16)).hexdigest(),
                name=f"bench-{i}",
                reply_to=0,
            )
        )
        setup.append(
            TokensPurchased(
                **envelope,
                event_id=uuid.uuid4().hex,
                purchase_id=f"order-{i}",
                tokens=per_client + 10,
                reply_to=0,
            )
        )
    memes = []
    for i in range(requests):
        lat, lon = round(rng.uniform(-90, 90), 6), round(rng.uniform(-180, 180), 6)
        query = rng.choice(QUERIES)
        memes.append(
            MemeRequested(
                event_id=uuid.uuid4().hex,
                client_id=ids[i % clients],
                region=region,
                occurred_at_ms=at + i,
                request_id=uuid.uuid4().hex,
                fingerprint=fingerprint(lat, lon, query),
                lat=lat,
                lon=lon,
                query=query,
                deadline_ms=at + 3_600_000,  # no refund timer fires during the run
                reply_to=0,
            )
        )
    return setup, memes


def produce_all(bootstrap: str, topic: str, events: list[Any], label: str) -> Counter[int]:
    """A plain idempotent producer; returns how many landed in each partition."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    per_partition: Counter[int] = Counter()
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            per_partition[msg.partition()] += 1

    started = time.monotonic()
    for i, event in enumerate(events, 1):
        while True:
            try:
                producer.produce(
                    topic, key=event.client_id.encode(), value=dump(event), on_delivery=on_delivery
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        if i % PROGRESS_EVERY == 0:
            say(f"  {label}: {i:,}/{len(events):,} produced")
    if producer.flush(120) or errors:
        raise RuntimeError(f"pre-fill of {topic} failed: {errors[:3]}")
    say(f"  {label}: {len(events):,} events in {time.monotonic() - started:.1f} s -> {topic}")
    return per_partition


# --------------------------------------------------------------------------- (a) real


def committed_total(admin: AdminClient, group: str, partitions: list[TopicPartition]) -> int:
    """Sum of the group's committed offsets over ``partitions`` (none committed: 0)."""
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(t.topic, t.partition) for t in partitions]
    )
    give_up = time.monotonic() + 60
    while True:
        future = admin.list_consumer_group_offsets([request], request_timeout=5)[group]
        try:
            result = future.result(timeout=15)
            return sum(max(0, tp.offset) for tp in result.topic_partitions)
        except (KafkaException, TimeoutError) as exc:
            if time.monotonic() > give_up:
                raise
            say(f"  list_consumer_group_offsets failed ({exc!r}); asking again")


def log_time(path: Path, pattern: str, after: float) -> float | None:
    """Epoch seconds of the first log line matching ``pattern`` written after ``after``."""
    for line in path.read_text(errors="replace").splitlines():
        if re.search(pattern, line):
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if stamp >= after - 0.01:
                return stamp
    return None


def high_watermarks(bootstrap: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-wm-{uuid.uuid4()}"})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(partitions)
        ]
    finally:
        consumer.close()


def wait_for_group(
    region: Region,
    admin: AdminClient,
    partitions: list[TopicPartition],
    base: int,
    target: int,
    poll_s: float,
    label: str,
    meter: CpuMeter | None = None,
) -> dict[str, float]:
    """Poll the group's committed offsets from ``base`` (read before the processor
    started) until they reach ``target``."""
    group = group_id(region.name)
    first: tuple[float, int] | None = None
    last_progress = time.monotonic()
    started = time.monotonic()
    slowest_call = 0.0
    while True:
        asked = time.time()
        total = committed_total(admin, group, partitions)
        now = time.time()
        slowest_call = max(slowest_call, now - asked)
        if first is None and total > base:
            first = (now, total)
            if meter is not None:
                meter.start()
        if total >= target:
            if meter is not None:
                meter.stop()
            break
        if time.monotonic() - last_progress >= 2:
            last_progress = time.monotonic()
            say(f"  {label}: committed {total - base:,}/{target - base:,}")
        if time.monotonic() - started > WAIT_TIMEOUT_S:
            raise TimeoutError(f"{label}: committed {total}/{target} after {WAIT_TIMEOUT_S} s")
        region.check_alive()
        time.sleep(poll_s)  # the polling cadence: the resolution of the end time
    assert first is not None
    return {
        "first_commit_at": first[0],
        "committed_at_first": first[1] - base,
        "end_at": now,
        # the end is known to within one poll period plus one admin call
        "end_resolution_s": poll_s + slowest_call,
    }


def fold_setup_with_processor(region: Region, expected: int) -> None:
    topics = Topics(region.name)
    admin = AdminClient({"bootstrap.servers": region.kafka.bootstrap})
    purchases = [TopicPartition(topics.purchases, p) for p in range(region.settings.partitions)]
    region.start("processor")
    wait_for_group(region, admin, purchases, 0, expected, 0.1, "(a) phase 1")
    region.stop("processor")


def run_transactional(
    region: Region,
    bootstrap: str,
    requests: int,
    poll_s: float,
    broker_pid: int | None,
) -> dict[str, Any]:
    topics = Topics(region.name)
    n_partitions = region.settings.partitions
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = [TopicPartition(topics.requests, p) for p in range(n_partitions)]
    ledger_before = high_watermarks(bootstrap, topics.ledger, n_partitions)
    base = committed_total(admin, group_id(region.name), partitions)
    spawned = time.time()
    proc = region.start("processor")
    meter = CpuMeter({"processor": proc.pid, "broker": broker_pid, "bench": os.getpid()})
    times = wait_for_group(region, admin, partitions, base, base + requests, poll_s, "(a)", meter)
    region.stop("processor")
    log = region.log_path("processor")
    assigned = log_time(log, r"partitions assigned", spawned)
    stopped = re.findall(r"ledger processor stopped decisions=(\d+)", log.read_text())
    decisions = int(stopped[-1]) if stopped else None
    ledger_after = high_watermarks(bootstrap, topics.ledger, n_partitions)
    charged, markers = read_back(bootstrap, topics.ledger, ledger_before, ledger_after)
    # Each transaction writes one commit marker to every ledger partition it wrote to:
    # the busiest partition's count (or the max batch size) bounds the number of
    # transactions from below, the sum over partitions from above.
    max_batch = region.settings.max_batch_size
    txn_low = max(max(markers), -(-requests // max_batch))
    txn_high = sum(markers)
    start = assigned if assigned is not None else spawned
    steady = requests - times["committed_at_first"]
    report = meter.report
    result = {
        "rate": requests / (times["end_at"] - start),
        "seconds": times["end_at"] - start,
        "start": "partitions assigned (processor log)" if assigned else "process spawn",
        "startup_s": start - spawned,
        "steady_rate": steady / max(1e-9, times["end_at"] - times["first_commit_at"]),
        "decisions_logged": decisions,
        "charged_in_ledger": charged,
        "end_resolution_s": times["end_resolution_s"],
        "markers_per_partition": markers,
        "transactions_between": [txn_low, txn_high],
        "mean_batch_between": [requests / max(1, txn_high), requests / max(1, txn_low)],
        # consumption time over the number of transactions: the mean time per batch
        "mean_cycle_ms_between": [
            1000 * (times["end_at"] - start) / max(1, txn_high),
            1000 * (times["end_at"] - start) / max(1, txn_low),
        ],
        "cpu": report.as_dict() if report else None,
    }
    say(
        f"(a) transactional: {result['rate']:,.0f} decisions/s over {result['seconds']:.2f} s "
        f"(start-up before consumption {result['startup_s']:.1f} s); steady "
        f"{result['steady_rate']:,.0f}/s"
    )
    low, high = result["mean_batch_between"]
    say(
        f"    output: {charged:,} TokensCharged read back; commit markers per ledger partition "
        f"{markers} -> {txn_low}..{txn_high} transactions, mean batch {low:.0f}..{high:.0f} "
        f"requests, mean cycle {result['mean_cycle_ms_between'][0]:.0f}.."
        f"{result['mean_cycle_ms_between'][1]:.0f} ms per transaction; end time known to "
        f"{times['end_resolution_s'] * 1000:.0f} ms"
    )
    if report:
        say("    " + report.line())
    if charged != requests:
        raise RuntimeError(f"(a) charged {charged} of {requests} requests: not comparable")
    return result


def read_back(
    bootstrap: str, topic: str, before: list[int], after: list[int]
) -> tuple[int, list[int]]:
    """Count committed TokensCharged records between the offsets; the rest of the offset
    range is transaction markers (nothing is aborted here: checked by the count)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-readback-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    counts = [0] * len(before)
    todo = {p for p in range(len(before)) if after[p] > before[p]}
    consumer.assign([TopicPartition(topic, p, before[p]) for p in todo])
    charged = 0
    give_up = time.monotonic() + 120
    while todo and time.monotonic() < give_up:
        for msg in consumer.consume(1000, 1.0):
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    todo.discard(msg.partition())
                continue
            counts[msg.partition()] += 1
            if b'"type":"TokensCharged"' in msg.value():
                charged += 1
    consumer.close()
    markers = [after[p] - before[p] - counts[p] for p in range(len(before))]
    return charged, markers


# --------------------------------------------------------------------------- (b) at least once


class AtLeastOnceLoop:
    """The processor's fold without transactions: outputs acknowledged, then a commit."""

    def __init__(self, settings: Settings, out: Topics, group: str) -> None:
        self.settings = settings
        self.inputs = Topics(settings.region)
        self.out = out
        self.group = group
        self.records: dict[bytes, bytes] = {}
        self.state = KeyValueState(self.records.get)
        self.producer = Producer(
            {
                **settings.kafka_common(),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 1,
            }
        )
        self.delivery_errors: list[KafkaError] = []
        self.charged = 0

    def close(self) -> None:
        self.producer.flush(30)
        del self.producer

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                **self.settings.kafka_common(),
                "group.id": self.group,
                "partition.assignment.strategy": "range",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 5,
                "session.timeout.ms": 10_000,
            }
        )

    def run(self, expected: int, label: str, meter: CpuMeter | None = None) -> dict[str, Any]:
        consumer = self._consumer()
        assigned_at: list[float] = []
        consumer.subscribe(
            self.inputs.ledger_inputs, on_assign=lambda *_: assigned_at.append(time.time())
        )
        wait_s = self.settings.commit_interval_ms / 1000
        batch_sizes: list[int] = []
        consumed = 0
        first: tuple[float, int] | None = None
        progress_at = time.monotonic()
        started = time.monotonic()
        try:
            while consumed < expected:
                messages = take_batch(consumer, self.settings.max_batch_size, wait_s)
                if not messages:
                    if time.monotonic() - started > WAIT_TIMEOUT_S:
                        raise TimeoutError(f"{label}: consumed {consumed}/{expected}")
                    continue
                offsets: dict[tuple[str, int], int] = {}
                for msg in messages:
                    if msg.error():
                        raise RuntimeError(f"{label}: consume error {msg.error()}")
                    offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
                    self._apply(msg.partition(), decide(self.state, parse_input(msg.value())))
                consumed += len(messages)
                # At least once: every output acknowledged before the offsets move on.
                if self.producer.flush(60) or self.delivery_errors:
                    raise RuntimeError(f"{label}: produce failed {self.delivery_errors[:3]}")
                consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    asynchronous=False,
                )
                batch_sizes.append(len(messages))
                if first is None:
                    first = (time.time(), consumed)
                    if meter is not None:
                        meter.start()
                if time.monotonic() - progress_at >= 2:
                    progress_at = time.monotonic()
                    say(f"  {label}: committed {consumed:,}/{expected:,}")
            end = time.time()
            if meter is not None:
                meter.stop()
        finally:
            consumer.close()
        assert first is not None
        start = assigned_at[0] if assigned_at else first[0]
        return {
            "rate": expected / (end - start),
            "seconds": end - start,
            "start": "partitions assigned (on_assign)",
            "steady_rate": (expected - first[1]) / max(1e-9, end - first[0]),
            "commits": len(batch_sizes),
            "batch_mean": sum(batch_sizes) / len(batch_sizes),
            "batch_p50": percentile(sorted(batch_sizes), 50),
            "batch_max": max(batch_sizes),
        }

    def _apply(self, partition: int, decision: Decision) -> None:
        for key, value in record_writes(decision.account, decision.request, decision.purchase):
            if value is None:
                self.records.pop(key, None)
            else:
                self.records[key] = value
            self._produce(self.out.ledger_changelog, partition, key, value)
        for entry in decision.entries:
            key = entry.client_id.encode()
            value = dump(entry)
            self._produce(self.out.ledger, partition, key, value)
            if isinstance(entry, AccountOpened):
                self._produce(self.out.clients, partition, key, value)
            if entry.type == "TokensCharged":
                self.charged += 1
        if decision.approved is not None:
            approved = decision.approved
            self._produce(
                self.out.approved(approved.kind),
                partition,
                approved.client_id.encode(),
                dump(approved),
            )
        for reply_to, reply in decision.replies:
            self._produce(self.out.replies, reply_to, reply.correlation_id.encode(), dump(reply))

    def _produce(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                self.producer.produce(
                    topic, value=value, key=key, partition=partition, on_delivery=self._delivered
                )
                return
            except BufferError:
                self.producer.poll(0.01)

    def _delivered(self, err: KafkaError | None, _: Message) -> None:
        if err is not None:
            self.delivery_errors.append(err)


# --------------------------------------------------------------------------- (d) txn cycle


def run_txn_cycles(
    bootstrap: str, source_topic: str, out_topic: str, partitions: int, cycles: int,
    backoffs: list[int],
) -> dict[str, Any]:  # fmt: skip
    """Back-to-back transactions shaped like the processor's (produce to every partition,
    ``send_offsets_to_transaction``, ``commit_transaction``), timed one by one, for
    each value of librdkafka's ``retry.backoff.ms`` (its default is 100 ms; the ledger
    processor does not set it). A transaction begun right after a commit can be told
    CONCURRENT_TRANSACTIONS while the broker writes the previous commit's markers, and
    librdkafka retries after that backoff."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-txn-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([source_topic])
    msg = None
    give_up = time.monotonic() + 60
    while (msg is None or msg.error()) and time.monotonic() < give_up:
        msg = consumer.poll(0.5)
    if msg is None or msg.error():
        raise RuntimeError(f"(d): nothing to consume from {source_topic}")
    offsets = [TopicPartition(msg.topic(), msg.partition(), msg.offset() + 1)]
    out: dict[str, Any] = {}
    try:
        for backoff in backoffs:
            producer = Producer(
                {
                    "bootstrap.servers": bootstrap,
                    "transactional.id": f"bench-txn-{uuid.uuid4().hex[:8]}",
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 1,
                    "retry.backoff.ms": backoff,
                }
            )
            producer.init_transactions(30)
            times: list[float] = []
            for _ in range(cycles):
                started = time.perf_counter()
                producer.begin_transaction()
                for partition in range(partitions):
                    producer.produce(out_topic, b"bench", partition=partition)
                producer.send_offsets_to_transaction(
                    offsets, consumer.consumer_group_metadata(), 10
                )
                producer.commit_transaction(10)
                times.append((time.perf_counter() - started) * 1000)
            del producer
            times.sort()
            out[str(backoff)] = {
                f"p{q}_ms": round(percentile(times, q), 1) for q in (50, 90, 99)
            } | {"cycles_per_s": round(1000 * len(times) / sum(times), 1)}
            say(
                f"(d) retry.backoff.ms={backoff}: transaction cycle p50 "
                f"{out[str(backoff)]['p50_ms']:.1f} ms, p90 {out[str(backoff)]['p90_ms']:.1f}, "
                f"p99 {out[str(backoff)]['p99_ms']:.1f}; {out[str(backoff)]['cycles_per_s']:.1f}"
                " transactions/s back to back"
            )
    finally:
        consumer.close()
    return out


# --------------------------------------------------------------------------- (c) in memory


def best_of(runs: int, measure: Any) -> dict[str, Any]:
    """Run ``measure`` (returns seconds) ``runs`` times on fresh state; keep the fastest,
    the usual estimate of a CPU-bound loop's cost on a machine with other work."""
    times = [measure() for _ in range(runs)]
    return {"seconds": min(times), "all_seconds": [round(t, 4) for t in times]}


def run_pure(setup: list[InputEvent], memes: list[MemeRequested], runs: int) -> dict[str, Any]:
    def measure() -> float:
        ledger = MemoryLedger()
        for event in setup:
            ledger.handle(event)
        started = time.perf_counter()
        for event in memes:
            ledger.handle(event)
        elapsed = time.perf_counter() - started
        charged = sum(1 for e in ledger.entries if e.type == "TokensCharged")
        if charged != len(memes):
            raise RuntimeError(f"(c) charged {charged} of {len(memes)}")
        return elapsed

    result = best_of(runs, measure)
    return {"rate": len(memes) / result["seconds"], **result}


def run_pure_with_json(
    setup: list[InputEvent], memes: list[MemeRequested], runs: int
) -> dict[str, Any]:
    """(c'): parse each input from bytes and serialize every output, still no Kafka."""
    raw_setup = [dump(e) for e in setup]
    raw = [dump(e) for e in memes]

    def measure() -> float:
        records: dict[bytes, bytes] = {}
        state = KeyValueState(records.get)
        out: list[bytes] = []

        def fold(payload: bytes) -> None:
            decision = decide(state, parse_input(payload))
            for key, value in record_writes(decision.account, decision.request, decision.purchase):
                if value is None:
                    records.pop(key, None)
                else:
                    records[key] = value
                    out.append(value)
            out.extend(dump(entry) for entry in decision.entries)
            if decision.approved is not None:
                out.append(dump(decision.approved))
            out.extend(dump(reply) for _, reply in decision.replies)

        for payload in raw_setup:
            fold(payload)
        started = time.perf_counter()
        for payload in raw:
            fold(payload)
        return time.perf_counter() - started

    result = best_of(runs, measure)
    return {"rate": len(raw) / result["seconds"], **result}


# --------------------------------------------------------------------------- output


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {
        "transactional": "(a) LedgerProcessor\nKafka transactions",
        "at_least_once": "(b) same fold,\nat least once",
        "pure_fold_json": "(c') fold + JSON\nin memory",
        "pure_fold": "(c) fold\nin memory",
    }
    names = [n for n in labels if n in results]
    rates = [results[n]["rate"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    bars = ax.bar([labels[n] for n in names], rates, color=["C0", "C1", "C2", "C3"][: len(names)])
    for bar, rate in zip(bars, rates, strict=True):
        ax.annotate(
            f"{rate:,.0f}/s",
            (bar.get_x() + bar.get_width() / 2, rate),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_ylabel("decisions per second")
    settings = results["settings"]
    ax.set_title(
        f"{results['requests']:,} MemeRequested, {settings['partitions']} partitions, "
        f"max_batch_size {settings['max_batch_size']}, "
        f"commit_interval_ms {settings['commit_interval_ms']}",
        fontsize=10,
    )
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    say(f"plot written: {path}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20_000, help="MemeRequested to fold")
    parser.add_argument("--clients", type=int, default=100, help="clients (keys) they spread on")
    parser.add_argument("--poll-ms", type=float, default=50, help="committed-offset poll period")
    parser.add_argument("--repeat", type=int, default=3, help="in-memory runs (best is kept)")
    parser.add_argument(
        "--txn-cycles", type=int, default=50, help="(d) transactions per setting; 0 skips"
    )
    parser.add_argument(
        "--backoffs", default="100,10", help="(d) retry.backoff.ms values to compare"
    )
    parser.add_argument("--skip-transactional", action="store_true")
    parser.add_argument("--skip-at-least-once", action="store_true")
    parser.add_argument("--png", type=Path, default=IMG / "processor-rates.png")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    stop_on_sigterm()
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "benchmark": "processor",
        "started": timestamp(),
        "machine": machine_description(),
        "requests": args.requests,
        "clients": args.clients,
        "env": {k: v for k, v in os.environ.items() if k.startswith("MAAS_")},
    }
    say(f"machine: {results['machine']}")
    with kafka() as cluster, Region(cluster) as region:
        settings = region.settings
        results["region"] = region.name
        results["settings"] = {
            "partitions": settings.partitions,
            "max_batch_size": settings.max_batch_size,
            "commit_interval_ms": settings.commit_interval_ms,
        }
        say(f"settings: {results['settings']}")
        shadow = Settings.from_env(region.env, region=region.name + "-nt")
        region.create_topics()
        ensure_topics(shadow)
        loop = AtLeastOnceLoop(settings, Topics(shadow.region), f"{region.name}.bench-nt")
        try:
            say(f"inputs: {args.clients} clients, {args.requests:,} MemeRequested")
            setup, memes = make_inputs(region.name, args.clients, args.requests)
            topics = Topics(region.name)
            produce_all(cluster.bootstrap, topics.purchases, setup, "registrations + purchases")

            if not args.skip_transactional:
                say("(a) phase 1: maas processor folds the registrations (not measured)")
                fold_setup_with_processor(region, len(setup))
            if not args.skip_at_least_once:
                say("(b) phase 1: the at-least-once loop folds the registrations (not measured)")
                loop.run(len(setup), "(b) phase 1")

            per_partition = produce_all(cluster.bootstrap, topics.requests, memes, "requests")
            results["requests_per_partition"] = dict(sorted(per_partition.items()))

            if not args.skip_transactional:
                say("(a) LedgerProcessor with Kafka transactions (maas processor)")
                results["transactional"] = run_transactional(
                    region, cluster.bootstrap, args.requests, args.poll_ms / 1000, cluster.pid()
                )
            if not args.skip_at_least_once:
                say("(b) the same fold, at least once (no transactions)")
                meter = CpuMeter({"bench": os.getpid(), "broker": cluster.pid()})
                loop.charged = 0
                b = loop.run(args.requests, "(b)", meter)
                if loop.charged != args.requests:
                    raise RuntimeError(f"(b) charged {loop.charged} of {args.requests}")
                b["cpu"] = meter.report.as_dict() if meter.report else None
                results["at_least_once"] = b
                say(
                    f"(b) at least once: {b['rate']:,.0f} decisions/s over {b['seconds']:.2f} s;"
                    f" steady {b['steady_rate']:,.0f}/s; {b['commits']} commits, batch mean "
                    f"{b['batch_mean']:.0f} p50 {b['batch_p50']} max {b['batch_max']}"
                )
                if meter.report:
                    say("    " + meter.report.line())
            if args.txn_cycles > 0:
                say(f"(d) transaction cycle: {args.txn_cycles} back-to-back transactions")
                results["txn_cycle"] = run_txn_cycles(
                    cluster.bootstrap,
                    topics.requests,
                    Topics(shadow.region).ledger,
                    settings.partitions,
                    args.txn_cycles,
                    [int(b) for b in args.backoffs.split(",")],
                )
        finally:
            # Every librdkafka client goes before the broker does: destroying one whose
            # broker is gone can block the interpreter's exit.
            loop.close()
            delete_topics(cluster.bootstrap, shadow.region)

    say(f"(c) pure fold in memory: MemoryLedger.handle, best of {args.repeat} runs")
    results["pure_fold"] = run_pure(setup, memes, args.repeat)
    say(f"(c) pure fold: {results['pure_fold']['rate']:,.0f} decisions/s")
    results["pure_fold_json"] = run_pure_with_json(setup, memes, args.repeat)
    say(f"(c') fold + JSON parse/serialize: {results['pure_fold_json']['rate']:,.0f} decisions/s")

    print(f"\n  {args.requests:,} MemeRequested, settings {results['settings']}")
    print(f"  {'':34} {'decisions/s':>12} {'vs (c)':>8} {'vs (c`)':>8}")
    pure, pure_json = results["pure_fold"]["rate"], results["pure_fold_json"]["rate"]
    for key, label in (
        ("transactional", "(a) LedgerProcessor, transactions"),
        ("at_least_once", "(b) same fold, at least once"),
        ("pure_fold_json", "(c') fold + JSON, in memory"),
        ("pure_fold", "(c) fold, in memory"),
    ):
        if key in results:
            rate = results[key]["rate"]
            print(f"  {label:34} {rate:12,.0f} {rate / pure:8.3f} {rate / pure_json:8.3f}")
    if "transactional" in results and "at_least_once" in results:
        a, b = results["transactional"]["rate"], results["at_least_once"]["rate"]
        results["ratio_transactional_vs_at_least_once"] = a / b
        print(f"  (a)/(b) = {a / b:.2f}: the transactional processor's rate over the loop's")
    out = RESULTS / f"processor-{results['started']}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    say(f"results written: {out}")
    plot(results, args.png)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        say("interrupted; processes stopped")
        sys.exit(130)
