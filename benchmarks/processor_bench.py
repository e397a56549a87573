"""The ledger processor's decisions per second: exactly once against at least once.

A fresh region is seeded through a plain idempotent producer with ``--clients``
registrations and purchases (enough tokens for every request), then ``--requests``
``MemeRequested`` (deadlines an hour away: no refund timer fires). No API, no generator.
Both ways below first fold the registrations and purchases, unmeasured; then, timed:

(a) **exactly once**: the real processor, ``python -m maas.cli processor`` started as
    the supervisor starts it; once it has logged ``partitions assigned`` (after the
    restore) the requests are appended, and it is timed from the first append until its
    group's committed offsets, polled every ``--poll-ms``, reach the end of the requests
    topic. Its committed ledger must charge every request.
(b) **at least once**, the baseline: a plain consumer with the processor's consumer
    settings and group commit (``take_batch``), the fold on in-memory state
    (``MemoryLedger``), the same records (``record_writes`` once per key per batch,
    ``decision_outputs``)
    produced without a transaction to a shadow region, then ``flush`` and a synchronous
    offset commit per batch: outputs acknowledged before the offsets move.

With ``--instances N`` (N > 1), (a) is followed by **(aN)**: ``--requests`` more, decided
by N processor instances in one group (one process each, as ``maas up --processors N``
runs them), appended once every instance holds its partitions; the scaling is (aN)/(a).
(b) then folds both rounds.

(c) **the fold alone**: ``MemoryLedger.handle`` over the same inputs in this process, no
    Kafka, timed by CPU time (one core): the ceiling the processor's Python has.

Prints decisions/s of each, the ratio (a)/(b) and CPU ms per decision of the folding
process and of the broker (``/proc``); writes ``benchmarks/results/processor-*.json``.
``--smoke`` runs tiny sizes in seconds, with two instances.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    RESULTS,
    CommittedOffsets,
    CpuMeter,
    CpuReport,
    Region,
    kafka,
    machine_description,
    say,
    stop_on_sigterm,
    timestamp,
)
from confluent_kafka import (
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from api.routes.memes import fingerprint
from core.admin import delete_region_topics, ensure_topics
from core.batching import take_batch
from core.clock import now_ms
from core.settings import Settings
from core.topic_reader import position_of, read_topic
from core.topics import Topics
from ledger.memory import MemoryLedger
from ledger.state import record_writes
from maas.processes import process_label
from processors.ledger.outputs import decision_outputs
from processors.ledger.processor import PRODUCE_LINGER_MS, group_id
from schemas.events import ClientRegistered, MemeRequested, TokensPurchased, dump, parse_input

QUERIES = ["food", "cats", "dogs", "monday", "coffee", "kafka", "rain", "pizza"]
WAIT_TIMEOUT_S = 900


def make_inputs(
    region: str, clients: int, requests: int
) -> tuple[list[ClientRegistered | TokensPurchased], list[MemeRequested]]:
    at = now_ms()
    ids = [f"bench-{i:05d}-{uuid.uuid4().hex[:8]}" for i in range(clients)]
    tokens = -(-requests // clients) + 10
    setup: list[ClientRegistered | TokensPurchased] = []
    for i, client_id in enumerate(ids):
        common = {"client_id": client_id, "region": region, "occurred_at_ms": at, "reply_to": 0}
        key_hash = hashlib.sha256(os.urandom(16)).hexdigest()
        setup.append(
            ClientRegistered(
                **common, event_id=uuid.uuid4().hex, api_key_sha256=key_hash, name=f"b{i}"
            )
        )
        setup.append(
            TokensPurchased(
                **common, event_id=uuid.uuid4().hex, purchase_id=f"order-{i}", tokens=tokens
            )
        )
    memes = []
    for i in range(requests):
        lat, lon, query = (i * 7) % 180 - 90.0, (i * 13) % 360 - 180.0, QUERIES[i % len(QUERIES)]
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
                deadline_ms=at + 3_600_000,
                reply_to=0,
            )
        )
    return setup, memes


def produce(producer: Producer, topic: str, key: bytes, value: bytes | None, **where: Any) -> None:
    """Produce, waiting for room when the local queue is full."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, **where)
            return
        except BufferError:
            producer.poll(0.01)


def produce_all(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """A plain idempotent producer, as the API's; ``records`` are (key, value) pairs."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    errors: list[KafkaError] = []
    started = time.monotonic()
    for key, value in records:
        produce(
            producer,
            topic,
            key,
            value,
            on_delivery=lambda err, _: errors.append(err) if err else None,
        )
    if producer.flush(120) or errors:
        raise RuntimeError(f"appending to {topic} failed: {errors[:3]}")
    say(f"  {len(records):,} events -> {topic} in {time.monotonic() - started:.2f} s")


def cpu_ms_per_decision(report: CpuReport, decisions: int) -> dict[str, float]:
    return {
        name: round(10 * percent * report.seconds / max(1, decisions), 4)
        for name, percent in report.percent.items()
    }


# --------------------------------------------------------------------------- (a)


def committed_total(committed: CommittedOffsets, group: str, tps: list[TopicPartition]) -> int:
    """The group's committed offsets on ``tps``, summed (none committed yet: 0)."""
    return sum(max(0, tp.offset) for tp in committed.of(group, tps))


def run_processor(
    region: Region,
    topic: str,
    events: list[Any],
    poll_s: float,
    broker_pid: int | None,
    instances: int = 1,
) -> dict[str, Any]:
    """Start ``instances`` processors; once every one has logged ``partitions assigned``
    (the group has settled), append ``events`` to ``topic`` and wait until the group's
    committed offsets on it moved by as many; stop them. Timed from the first append:
    appending is many times faster than deciding, so the processors set the pace.
    (Appending first and timing from the assignment raced: one instance could decide a
    small round while the others were still joining, leaving nothing to time.)"""
    # Serialised beforehand: the appending shares the processors' cores while timed.
    records = [(event.client_id.encode(), dump(event)) for event in events]
    committed = CommittedOffsets(region.kafka.bootstrap)
    tps = [TopicPartition(topic, p) for p in range(region.settings.partitions)]
    group = group_id(region.name)
    target = committed_total(committed, group, tps) + len(events)
    instance_ids = [None] if instances == 1 else [str(i) for i in range(instances)]
    labels = [process_label("processor", instance_id) for instance_id in instance_ids]
    logs = [region.log_path(label) for label in labels]
    log_sizes = [log.stat().st_size if log.exists() else 0 for log in logs]
    pids = {
        label: region.start("processor", instance_id).pid
        for label, instance_id in zip(labels, instance_ids, strict=True)
    }
    give_up = time.monotonic() + WAIT_TIMEOUT_S

    def wait(done: Callable[[], bool], what: str) -> None:
        while not done():
            if time.monotonic() > give_up:
                raise TimeoutError(f"processor: {what} on {topic}")
            region.check_alive()
            time.sleep(poll_s)  # the resolution of the end time

    wait(lambda: all(map(_assigned_since, logs, log_sizes)), "no partitions assigned")
    meter = CpuMeter({**pids, "broker": broker_pid})
    meter.start()
    started_at = time.monotonic()
    produce_all(region.kafka.bootstrap, topic, records)
    wait(lambda: committed_total(committed, group, tps) >= target, f"offsets below {target}")
    seconds = time.monotonic() - started_at
    report = meter.stop()
    for label in labels:
        region.stop(label)
    committed.close()
    cpu_ms = cpu_ms_per_decision(report, len(events))
    if instances > 1:
        cpu_ms["processor"] = round(sum(cpu_ms.pop(label) for label in labels), 4)
    return {
        "instances": instances,
        "decisions": len(events),
        "seconds": seconds,
        "rate": len(events) / seconds,
        "resolution_s": poll_s,
        "cpu": report.as_dict(),
        "cpu_ms_per_decision": cpu_ms,
    }


def _assigned_since(log: Path, offset: int) -> bool:
    if not log.exists():
        return False
    with log.open("rb") as lines:
        lines.seek(offset)
        return b"partitions assigned" in lines.read()


def check_charged(settings: Settings, expected: int, label: str) -> None:
    """The region's ledger topic holds ``expected`` committed ``TokensCharged``."""
    records = read_topic(settings, Topics(settings.region).ledger)
    charged = sum(b'"type":"TokensCharged"' in (msg.value() or b"") for msg in records)
    if charged != expected:
        raise RuntimeError(f"{label} charged {charged} of {expected} requests")


# --------------------------------------------------------------------------- (b)


class AtLeastOnce:
    """The baseline: the same fold and records, no transaction, offsets after a flush."""

    def __init__(self, settings: Settings, out: Topics, group: str) -> None:
        self.settings = settings
        self.out = out
        self.group = group
        self.ledger = MemoryLedger(keep_entries=False)
        self.charged = 0
        self.errors: list[KafkaError] = []
        self.producer = Producer(
            {
                **settings.kafka_common(),
                "enable.idempotence": True,
                "acks": "all",
                # It flushes each batch, as a commit does: the processor's batching.
                "linger.ms": PRODUCE_LINGER_MS,
            }
        )

    def run(self, expected: int, meter: CpuMeter) -> dict[str, Any]:
        # The processor's consumer settings, without its static membership.
        consumer = Consumer(
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
        assigned_at: list[float] = []

        def on_assign(*_: object) -> None:
            assigned_at.append(time.monotonic())
            meter.start()

        consumer.subscribe(Topics(self.settings.region).ledger_inputs, on_assign=on_assign)
        wait_s = self.settings.commit_interval_ms / 1000
        consumed = commits = 0
        give_up = time.monotonic() + WAIT_TIMEOUT_S
        try:
            while consumed < expected:
                messages = take_batch(consumer, self.settings.max_batch_size, wait_s)
                if time.monotonic() > give_up:
                    raise TimeoutError(f"at least once: consumed {consumed}/{expected}")
                if not messages:
                    continue
                offsets = {(t, p): o + 1 for t, p, o in map(position_of, messages)}
                writes: dict[int, dict[bytes, bytes | None]] = {}
                for msg in messages:
                    self.fold(msg, writes)
                # As the processor does: each state key once per batch, its last value.
                for partition, latest in writes.items():
                    for key, value in latest.items():
                        produce(
                            self.producer,
                            self.out.ledger_changelog,
                            key,
                            value,
                            partition=partition,
                            on_delivery=self.delivered,
                        )
                consumed += len(messages)
                if self.producer.flush(60) or self.errors:
                    raise RuntimeError(f"at least once: produce failed {self.errors[:3]}")
                consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    asynchronous=False,
                )
                commits += 1
            ended_at = time.monotonic()
            report = meter.stop()
        finally:
            consumer.close()
        seconds = ended_at - assigned_at[0]
        return {
            "decisions": consumed,
            "seconds": seconds,
            "rate": consumed / seconds,
            "commits": commits,
            "cpu": report.as_dict(),
            "cpu_ms_per_decision": cpu_ms_per_decision(report, consumed),
        }

    def fold(self, msg: Message, writes: dict[int, dict[bytes, bytes | None]]) -> None:
        error = msg.error()
        if error is not None:
            raise RuntimeError(f"at least once: consume error {error}")
        partition = msg.partition()
        assert partition is not None  # a consumed record has one
        decision = self.ledger.handle(parse_input(msg.value() or b""))
        self.charged += sum(entry.type == "TokensCharged" for entry in decision.entries)
        writes.setdefault(partition, {}).update(
            record_writes(decision.account, decision.requests, decision.purchase)
        )
        records = decision_outputs(
            self.out, partition, decision, self.settings.partitions, self.settings.reply_partitions
        )
        for topic, to, key, value, headers in records:
            produce(
                self.producer,
                topic,
                key,
                value,
                partition=to,
                headers=headers,
                on_delivery=self.delivered,
            )

    def delivered(self, err: KafkaError | None, _: Message) -> None:
        if err is not None:
            self.errors.append(err)

    def close(self) -> None:
        self.producer.flush(30)


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20_000, help="MemeRequested to fold")
    parser.add_argument("--clients", type=int, default=100, help="clients (keys) they spread on")
    parser.add_argument("--poll-ms", type=float, default=50, help="committed-offset poll period")
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="above 1: then as many processor instances on --requests more (scaling)",
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds: does it still run?")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.clients = 2_000, 4
        args.instances = max(args.instances, 2)  # the scaling path runs too
    return args


def fold_in_memory(
    setup: list[ClientRegistered | TokensPurchased], memes: list[MemeRequested]
) -> dict[str, Any]:
    """(c): the same inputs through the fold and its records, in memory, on one core."""
    ledger = MemoryLedger(keep_entries=False)
    for event in setup:
        ledger.handle(event)
    started = time.process_time()
    for meme in memes:
        ledger.handle(meme)
    seconds = time.process_time() - started
    return {
        "decisions": len(memes),
        "seconds": seconds,
        "rate": len(memes) / seconds,
        "cpu_ms_per_decision": {"fold": seconds * 1000 / len(memes)},
    }


def describe(label: str, result: dict[str, Any]) -> None:
    cpu = " ".join(f"{k}={v:.3f}" for k, v in result["cpu_ms_per_decision"].items())
    say(
        f"{label}: {result['decisions']:,} decisions in {result['seconds']:.2f} s = "
        f"{result['rate']:,.0f} decisions/s; cpu ms per decision: {cpu or 'not measured'}"
    )


def main() -> int:
    args = parse_args()
    stop_on_sigterm()
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "benchmark": "processor",
        "started": timestamp(),
        "machine": machine_description(),
        "requests": args.requests,
        "instances": args.instances,
        "clients": args.clients,
        "env": {k: v for k, v in os.environ.items() if k.startswith("MAAS_")},
    }
    with kafka() as cluster, Region(cluster) as region:
        settings = region.settings
        topics = Topics(region.name)
        knobs = ("partitions", "max_batch_size", "commit_interval_ms")
        results["settings"] = {name: getattr(settings, name) for name in knobs}
        shadow = Settings.from_env(region.env, region=region.name + "-alo")
        region.create_topics()
        ensure_topics(shadow)
        baseline = AtLeastOnce(settings, Topics(shadow.region), f"{region.name}.bench-alo")
        try:
            rounds = 1 if args.instances == 1 else 2
            total = rounds * args.requests
            say(f"making {args.clients} clients and {total:,} requests")
            setup, memes = make_inputs(region.name, args.clients, total)
            say("phase 1 (not measured): both fold the registrations and purchases")
            run_processor(region, topics.purchases, setup, 0.1, None)
            baseline.run(len(setup), CpuMeter({}))

            say("(a) exactly once: the ledger processor")
            a = run_processor(
                region, topics.requests, memes[: args.requests], args.poll_ms / 1000, cluster.pid()
            )
            check_charged(settings, args.requests, "(a)")
            describe("(a) exactly once", a)
            if rounds == 2:
                say(f"(a{args.instances}) exactly once, {args.instances} processor instances")
                scaled = run_processor(
                    region,
                    topics.requests,
                    memes[args.requests :],
                    args.poll_ms / 1000,
                    cluster.pid(),
                    args.instances,
                )
                check_charged(settings, total, f"(a{args.instances})")
                describe(f"(a{args.instances}) exactly once, {args.instances} instances", scaled)
                results["exactly_once_instances"] = scaled

            say("(b) at least once: the same fold and records, no transactions")
            baseline.charged = 0
            b = baseline.run(total, CpuMeter({"processor": os.getpid(), "broker": cluster.pid()}))
            if baseline.charged != total:
                raise RuntimeError(f"(b) charged {baseline.charged} of {total} requests")
            describe("(b) at least once", b)
            c = fold_in_memory(setup, memes)
            describe("(c) the fold alone, in memory, one core", c)
        finally:
            # Every librdkafka client goes before the broker does: destroying one whose
            # broker is gone can block the interpreter's exit.
            baseline.close()
            del baseline
            delete_region_topics(cluster.bootstrap, shadow.region)

    results |= {
        "exactly_once": a,
        "at_least_once": b,
        "fold_in_memory": c,
        "ratio": a["rate"] / b["rate"],
    }
    out = RESULTS / f"processor-{results['started']}.json"
    out.write_text(json.dumps(results, indent=2))
    say(f"results written: {out}")
    cpu = {
        name: "/".join(f"{r['cpu_ms_per_decision'].get(name, float('nan')):.3f}" for r in (a, b))
        for name in ("processor", "broker")
    }
    scaling = ""
    if "exactly_once_instances" in results:
        scaled = results["exactly_once_instances"]
        of_one = scaled["rate"] / a["rate"]
        scaling = f" instances={args.instances}: {scaled['rate']:.0f}/s ({of_one:.2f}x of one)"
    print(
        f"processor: exactly_once={a['rate']:.0f}/s{scaling} at_least_once={b['rate']:.0f}/s "
        f"ratio={results['ratio']:.3f} cpu_ms_per_decision processor={cpu['processor']} "
        f"broker={cpu['broker']} fold_in_memory={c['rate']:.0f}/s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        say("interrupted; processes stopped")
        sys.exit(130)
