"""The API's bridge to Kafka alone: CPU per call, against a plain client making the same
round trips.

A fresh region's topics, and a responder process that plays the ledger: it answers every
input on the requests topic with a ``Reply`` on the reply partition the input names. Only
this process is measured; the responder and the broker are reported beside it. Then:

(a) **bridge**: a started ``KafkaBridge`` (``api/bridge.py``) on an asyncio event loop,
    ``--calls`` ``AccountQueried`` calls, ``--concurrency`` at a time, as an API process
    makes them (its producer thread, reply thread and loop).
(b) **baseline**: one thread with a plain producer and a consumer of its own reply
    partition, keeping ``--concurrency`` queries outstanding: produce, read a reply,
    produce the next. The same records, parsing and round trips, with no event loop, no
    futures and no handing over between threads.

The default concurrency of 1 is near the API's regime at the service's 100/s: two API
processes, each with about one call in flight on average, so most wake-ups serve one call.
Prints the CPU of this process (``getrusage``) per call in each, the ratio (a)/(b), and
the machine's busy share; writes ``benchmarks/results/bridge-<timestamp>.json``.
``--smoke`` runs tiny sizes in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import time
import uuid
from dataclasses import asdict, dataclass
from multiprocessing.synchronize import Event
from typing import Any

from common import RESULTS, CpuMeter, kafka, machine_description, say, timestamp
from confluent_kafka import Consumer, Producer, TopicPartition

from api.bridge import KafkaBridge, producer_config, reply_consumer_config
from api.metrics import Metrics
from core.admin import ensure_topics
from core.batching import take_batch
from core.clock import now_ms
from core.settings import Settings
from core.topics import Topics
from schemas.events import AccountQueried, Reply, dump

CLIENT = "bench-client"
BRIDGE_PARTITION = 0  # the bridge's reply partition (its api_instance)
BASELINE_PARTITION = 1


@dataclass
class Phase:
    calls: int
    seconds: float
    cpu_us_per_call: float

    def line(self, label: str) -> str:
        return (
            f"{label}: {self.calls:,} calls in {self.seconds:.1f} s "
            f"({self.calls / self.seconds:,.0f}/s), {self.cpu_us_per_call:.0f} us of CPU per call"
        )


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def respond(bootstrap: str, region: str, stop: Event) -> None:
    """The responder process: a ``not_found`` reply to every query, at once."""
    settings = Settings(region=region, bootstrap_servers=bootstrap)
    topics = Topics(region)
    consumer = Consumer(
        {
            **settings.kafka_common(),
            "group.id": f"{region}.responder",
            "auto.offset.reset": "earliest",
            "socket.nagle.disable": True,
        }
    )
    consumer.subscribe([topics.requests])
    producer = Producer({**settings.kafka_common(), "linger.ms": 0, "socket.nagle.disable": True})
    while not stop.is_set():
        for message in take_batch(consumer, 500, 0.1):
            if message.error() is not None:
                continue
            query = AccountQueried.model_validate_json(message.value() or b"")
            reply = Reply(correlation_id=query.event_id, outcome="not_found")
            producer.produce(topics.replies, dump(reply), partition=query.reply_to)
        producer.poll(0)
    producer.flush(10)
    consumer.close()


async def bridge_phase(settings: Settings, calls: int, warmup: int, concurrency: int) -> Phase:
    bridge = KafkaBridge(settings, Metrics())
    bridge.start(asyncio.get_running_loop())
    try:
        if not await asyncio.to_thread(bridge.wait_positioned, 30):
            raise RuntimeError("the bridge's reply consumer was not positioned in 30 s")

        async def worker(count: int) -> None:
            for _ in range(count):
                query = AccountQueried(**bridge.envelope(CLIENT))
                if await bridge.call(bridge.topics.requests, query) is None:
                    raise RuntimeError("no reply by the deadline: is the responder running?")

        await asyncio.gather(*(worker(warmup // concurrency) for _ in range(concurrency)))
        per_worker = calls // concurrency
        started, cpu = time.monotonic(), cpu_seconds()
        await asyncio.gather(*(worker(per_worker) for _ in range(concurrency)))
        done = per_worker * concurrency
        return Phase(done, time.monotonic() - started, (cpu_seconds() - cpu) / done * 1e6)
    finally:
        await asyncio.to_thread(bridge.stop)


def baseline_phase(settings: Settings, calls: int, warmup: int, concurrency: int) -> Phase:
    topics = Topics(settings.region)
    # The bridge's own producer and reply-consumer settings: only the plumbing differs.
    own = settings.model_copy(update={"api_instance": BASELINE_PARTITION})
    producer = Producer(producer_config(own))
    consumer = Consumer(reply_consumer_config(own))
    partition = TopicPartition(topics.replies, BASELINE_PARTITION)
    _, end = consumer.get_watermark_offsets(partition, timeout=30)
    consumer.assign([TopicPartition(topics.replies, BASELINE_PARTITION, end)])

    def send() -> None:
        query = AccountQueried(
            event_id=uuid.uuid4().hex,
            client_id=CLIENT,
            region=settings.region,
            occurred_at_ms=now_ms(),
            reply_to=BASELINE_PARTITION,
        )
        producer.produce(topics.requests, key=CLIENT.encode(), value=dump(query))

    def run(count: int) -> None:
        sent = answered = 0
        while sent < min(concurrency, count):
            send()
            sent += 1
        deadline = time.monotonic() + 60
        while answered < count:
            if time.monotonic() > deadline:
                raise RuntimeError("no reply in 60 s: is the responder running?")
            for message in take_batch(consumer, 500, 0.5):
                if message.error() is not None:
                    continue
                Reply.model_validate_json(message.value() or b"")
                answered += 1
                if sent < count:
                    send()
                    sent += 1
            producer.poll(0)

    try:
        run(warmup)
        started, cpu = time.monotonic(), cpu_seconds()
        run(calls)
        return Phase(calls, time.monotonic() - started, (cpu_seconds() - cpu) / calls * 1e6)
    finally:
        producer.flush(10)
        consumer.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3_000, help="calls measured in each")
    parser.add_argument("--warmup", type=int, default=200, help="calls before measuring")
    parser.add_argument("--concurrency", type=int, default=1, help="calls in flight at once")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    args = parser.parse_args()
    if args.smoke:
        args.calls, args.warmup = 100, 20
    args.concurrency = max(1, min(args.concurrency, args.calls))
    return args


def main() -> int:
    args = parse_args()
    started = timestamp()
    machine = machine_description()
    with kafka() as cluster:
        region = "bench" + uuid.uuid4().hex[:8]
        settings = Settings(
            region=region, bootstrap_servers=cluster.bootstrap, api_instance=BRIDGE_PARTITION
        )
        ensure_topics(settings)
        say(f"region {region}: topics created; starting the responder")
        stop = multiprocessing.get_context("spawn").Event()
        responder = multiprocessing.get_context("spawn").Process(
            target=respond, args=(cluster.bootstrap, region, stop)
        )
        responder.start()
        try:
            pids = {"bench": os.getpid(), "responder": responder.pid, "broker": cluster.pid()}
            results: dict[str, Any] = {}
            for label in ("bridge", "baseline"):
                say(f"({'a' if label == 'bridge' else 'b'}) {label}: {args.calls:,} calls")
                with CpuMeter(pids) as meter:
                    if label == "bridge":
                        phase = asyncio.run(
                            bridge_phase(settings, args.calls, args.warmup, args.concurrency)
                        )
                    else:
                        phase = baseline_phase(settings, args.calls, args.warmup, args.concurrency)
                assert meter.report is not None
                say(phase.line(label))
                say(f"    {meter.report.line()}")
                results[label] = {**asdict(phase), "cpu": meter.report.as_dict()}
        finally:
            stop.set()
            responder.join(30)
    bridge, baseline = results["bridge"], results["baseline"]
    ratio = bridge["cpu_us_per_call"] / baseline["cpu_us_per_call"]
    out = RESULTS / f"bridge-{started}.json"
    out.write_text(
        json.dumps(
            {"benchmark": "bridge", "started": started, "machine": machine, "args": vars(args)}
            | results
            | {"ratio": ratio},
            indent=2,
        )
    )
    say(f"results written: {out}")
    print(
        f"bridge: {bridge['cpu_us_per_call']:.0f} us per call, baseline "
        f"{baseline['cpu_us_per_call']:.0f} us per call, bridge/baseline {ratio:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
