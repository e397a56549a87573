"""The usage analytics worker (faust) against the same counting in a plain consumer loop.

A fresh region's requests topic is pre-filled with ``--requests`` ``MemeRequested``
events from ``--clients`` clients, spread over the last ``--hours`` hours. Then:

(a) **faust**: ``maas usage`` in a subprocess, as ``maas up`` runs it (agent, RocksDB
    table, changelog, offset commits). Timed from the first count its ``/usage/`` view
    shows until the view shows every request (polled every ``--poll-ms``); its start-up
    (until the first count) is printed apart. CPU from ``/proc/<pid>/stat``.
(b) **baseline**: this process reads the same topic with a confluent-kafka consumer and
    does the same work per event (``parse_input``, ``hour_of``, ``add_request`` into a
    dict), with no table, changelog or commit. CPU from ``time.process_time``.

(c) **live**: the same worker, caught up, while this process appends ``--live-rate``
    requests a second for ``--live-seconds`` (default: the service's objective rate,
    ``slo.toml``), as the API does: one at a time, evenly spaced. CPU of the worker and
    of the broker per request, from the first append until ``/usage/`` shows the last.
    A live worker fetches and writes a few records at a time, so a request costs it
    more than in (a), where it reads a backlog in large batches.

Prints the rates (wall and per CPU second), the ratio (a)/(b) and the live cost; writes
``benchmarks/results/usage-<timestamp>.json``. ``--smoke`` runs tiny sizes in seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import httpx
from common import (
    RESULTS,
    CpuMeter,
    Kafka,
    Region,
    kafka,
    machine_description,
    say,
    stop_on_sigterm,
    timestamp,
)
from confluent_kafka import Consumer, KafkaError, Producer

from core.topics import Topics
from processors.usage.counts import add_request, hour_of
from schemas.events import MemeRequested, dump, parse_input

HOUR_MS = 3_600_000
SLO = Path(__file__).with_name("slo.toml")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=1_000)
    # 168 = the default retention: every client's value holds up to a week of hours.
    parser.add_argument("--hours", type=int, default=168)
    # Each poll summarizes the whole table in the worker: not too often.
    parser.add_argument("--poll-ms", type=int, default=500)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--live-rate", type=float, help="(c) requests/s (default: slo.toml)")
    parser.add_argument("--live-seconds", type=float, default=30.0)
    parser.add_argument("--smoke", action="store_true", help="a few seconds: does it still run?")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.clients, args.hours, args.poll_ms = 200, 10, 24, 100
        args.live_rate, args.live_seconds = 20.0, 2.0
    return args


def request(rng: random.Random, i: int, region: str, clients: int, at_ms: int) -> MemeRequested:
    now_ms = int(time.time() * 1000)
    return MemeRequested(
        event_id=uuid.uuid4().hex,
        client_id=f"c{rng.randrange(clients):05d}",
        region=region,
        occurred_at_ms=at_ms,
        request_id=uuid.uuid4().hex,
        fingerprint=f"{i:016x}",
        lat=rng.uniform(-90, 90),
        lon=rng.uniform(-180, 180),
        query=f"benchmark query {i % 97}",
        deadline_ms=now_ms + 5_000,
        reply_to=0,
    )


def append(producer: Producer, topic: str, event: MemeRequested) -> None:
    while True:
        try:
            producer.produce(topic, key=event.client_id.encode(), value=dump(event))
            return
        except BufferError:
            producer.poll(0.05)


def fill(bootstrap: str, region: str, requests: int, clients: int, hours: int) -> None:
    rng = random.Random(7)
    now_ms = int(time.time() * 1000)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20}
    )
    topic = Topics(region).requests
    started = time.monotonic()
    for i in range(requests):
        at_ms = now_ms - rng.randrange(hours * HOUR_MS)
        append(producer, topic, request(rng, i, region, clients, at_ms))
        if (i + 1) % 20_000 == 0:
            producer.poll(0)
            say(f"fill: {i + 1:,}/{requests:,} requests produced")
    if producer.flush(60) != 0:
        raise RuntimeError("fill: some requests were not delivered")
    say(f"fill: {requests:,} requests in {time.monotonic() - started:.1f} s")


def counted_by(port: int) -> int:
    try:
        return int(httpx.get(f"http://127.0.0.1:{port}/usage/", timeout=10).json()["requests"])
    except (httpx.HTTPError, ValueError):
        return 0


def run_faust(
    region: Region, port: int, requests: int, poll_s: float, timeout_s: float
) -> dict[str, Any]:
    meter = CpuMeter({"usage": region.pids()["usage"]})
    meter.start()
    started = time.monotonic()
    first: float | None = None
    counted, last_said = 0, 0
    give_up = started + timeout_s
    while counted < requests:
        region.check_alive()
        if time.monotonic() > give_up:
            raise TimeoutError(f"faust counted {counted:,} of {requests:,} in {timeout_s} s")
        counted = counted_by(port)
        if counted and first is None:
            first = time.monotonic()
            say(f"faust: first counts after {first - started:.1f} s (start-up)")
        if counted - last_said >= requests // 5:
            say(f"faust: {counted:,}/{requests:,} counted")
            last_said = counted
        time.sleep(poll_s)
    done = time.monotonic()
    cpu = meter.stop()
    assert first is not None
    cpu_s = cpu.percent["usage"] / 100 * cpu.seconds
    return {
        "startup_s": round(first - started, 2),
        "counting_s": round(done - first, 2),
        "rate_wall": requests / max(done - first, 1e-9),
        "cpu_s": round(cpu_s, 2),
        "rate_cpu": requests / max(cpu_s, 1e-9),
        "counted": counted,
    }


def run_live(
    cluster: Kafka,
    region: Region,
    port: int,
    already: int,
    clients: int,
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    """(c): requests appended one by one at ``rate`` while the caught-up worker counts."""
    producer = Producer(
        {"bootstrap.servers": cluster.bootstrap, "enable.idempotence": True, "linger.ms": 1}
    )
    topic = Topics(region.name).requests
    rng = random.Random(11)
    count = round(rate * seconds)
    meter = CpuMeter({"usage": region.pids()["usage"], "broker": cluster.pid()})
    meter.start()
    started = time.monotonic()
    for i in range(count):
        due = started + i / rate
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)  # the open-loop schedule: the next append is not due yet
        append(producer, topic, request(rng, i, region.name, clients, int(time.time() * 1000)))
        producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("live: some requests were not delivered")
    give_up = time.monotonic() + 60
    while (counted := counted_by(port)) < already + count:
        region.check_alive()
        if time.monotonic() > give_up:
            raise TimeoutError(f"live: faust counted {counted - already:,} of {count:,}")
        time.sleep(0.1)  # the worker is still counting: ask its view again
    cpu = meter.stop()
    per_request = {
        name: round(pct / 100 * cpu.seconds * 1000 / count, 3) for name, pct in cpu.percent.items()
    }
    return {
        "rate": rate,
        "requests": count,
        "seconds": round(cpu.seconds, 2),
        "percent_of_one_core": {k: round(v, 1) for k, v in cpu.percent.items()},
        "cpu_ms_per_request": per_request,
        "counted": counted - already,
    }


def run_baseline(bootstrap: str, region: str, requests: int, retention_hours: int) -> dict:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{region}.usage-baseline",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([Topics(region).requests])
    usage: dict[str, dict[str, int]] = {}
    seen = 0
    first: float | None = None
    cpu_first = 0.0
    while seen < requests:
        for msg in consumer.consume(1000, 1.0):
            if (error := msg.error()) is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(error)
                continue
            if first is None:
                first, cpu_first = time.monotonic(), time.process_time()
            event = parse_input(msg.value() or b"")
            if isinstance(event, MemeRequested):
                hours = usage.get(event.client_id, {})
                usage[event.client_id] = add_request(
                    hours, hour_of(event.occurred_at_ms), retention_hours
                )
            seen += 1
    done, cpu_done = time.monotonic(), time.process_time()
    consumer.close()
    assert first is not None
    counted = sum(sum(h.values()) for h in usage.values())
    return {
        "counting_s": round(done - first, 2),
        "rate_wall": requests / max(done - first, 1e-9),
        "cpu_s": round(cpu_done - cpu_first, 2),
        "rate_cpu": requests / max(cpu_done - cpu_first, 1e-9),
        "counted": counted,
    }


def main() -> int:
    args = parse_args()
    stop_on_sigterm()
    RESULTS.mkdir(parents=True, exist_ok=True)
    live_rate = args.live_rate or float(tomllib.loads(SLO.read_text())["rate_rps"])
    results: dict[str, Any] = {
        "benchmark": "usage",
        "started": timestamp(),
        "machine": machine_description(),
        "requests": args.requests,
        "clients": args.clients,
    }
    say(f"machine: {results['machine']}")
    with kafka() as cluster, Region(cluster) as region:
        region.create_topics()
        fill(cluster.bootstrap, region.name, args.requests, args.clients, args.hours)
        say("(b) baseline: confluent-kafka consumer + the same counting, no faust")
        baseline = run_baseline(
            cluster.bootstrap, region.name, args.requests, region.settings.usage_retention_hours
        )
        say(f"(a) faust: maas usage, until /usage/ shows {args.requests:,} requests")
        port = region.start_usage()
        faust = run_faust(region, port, args.requests, args.poll_ms / 1000, args.timeout_s)
        say(f"(c) live: {live_rate:g} requests/s for {args.live_seconds:g} s, one at a time")
        live = run_live(
            cluster, region, port, faust["counted"], args.clients, live_rate, args.live_seconds
        )
    for name, figures in (("faust", faust), ("baseline", baseline)):
        if figures["counted"] != args.requests:
            raise SystemExit(f"{name} counted {figures['counted']:,} of {args.requests:,}")
    if live["counted"] != live["requests"]:
        raise SystemExit(f"live: faust counted {live['counted']:,} of {live['requests']:,}")
    results |= {"faust": faust, "baseline": baseline, "live": live}
    ratio_wall = faust["rate_wall"] / baseline["rate_wall"]
    ratio_cpu = faust["rate_cpu"] / baseline["rate_cpu"]
    results["ratios"] = {"wall": round(ratio_wall, 3), "cpu": round(ratio_cpu, 3)}
    print()
    print(f"{'':<34}{'events/s (wall)':>16}{'events/s per core':>19}{'CPU s':>8}")
    for label, figures in (("(a) faust usage worker", faust), ("(b) baseline loop", baseline)):
        print(
            f"{label:<34}{figures['rate_wall']:>16,.0f}{figures['rate_cpu']:>19,.0f}"
            f"{figures['cpu_s']:>8.1f}"
        )
    print(f"(a)/(b): wall {ratio_wall:.2f}x, per core {ratio_cpu:.2f}x")
    print(f"faust start-up until the first count: {faust['startup_s']:.1f} s")
    cores, costs = live["percent_of_one_core"], live["cpu_ms_per_request"]
    print(
        f"(c) live at {live_rate:g} requests/s: "
        + ", ".join(
            f"{name} {cores[name]:.1f}% of a core, {costs[name]:.3f} ms per request"
            for name in cores  # the broker only when it is this benchmark's own
        )
    )
    out = RESULTS / f"usage-{results['started']}.json"
    out.write_text(json.dumps(results, indent=2))
    say(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
