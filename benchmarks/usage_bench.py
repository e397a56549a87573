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

Prints both rates (wall and per CPU second), the ratio (a)/(b), and what the worker
costs at the service's objective rate (``slo.toml``); writes
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
    parser.add_argument("--smoke", action="store_true", help="a few seconds: does it still run?")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.clients, args.hours, args.poll_ms = 200, 10, 24, 100
    return args


def fill(bootstrap: str, region: str, requests: int, clients: int, hours: int) -> None:
    rng = random.Random(7)
    now_ms = int(time.time() * 1000)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20}
    )
    topic = Topics(region).requests
    started = time.monotonic()
    for i in range(requests):
        client_id = f"c{rng.randrange(clients):05d}"
        event = MemeRequested(
            event_id=uuid.uuid4().hex,
            client_id=client_id,
            region=region,
            occurred_at_ms=now_ms - rng.randrange(hours * HOUR_MS),
            request_id=uuid.uuid4().hex,
            fingerprint=f"{i:016x}",
            lat=rng.uniform(-90, 90),
            lon=rng.uniform(-180, 180),
            query=f"benchmark query {i % 97}",
            deadline_ms=now_ms + 5_000,
            reply_to=0,
        )
        while True:
            try:
                producer.produce(topic, key=client_id.encode(), value=dump(event))
                break
            except BufferError:
                producer.poll(0.05)
        if (i + 1) % 20_000 == 0:
            producer.poll(0)
            say(f"fill: {i + 1:,}/{requests:,} requests produced")
    if producer.flush(60) != 0:
        raise RuntimeError("fill: some requests were not delivered")
    say(f"fill: {requests:,} requests in {time.monotonic() - started:.1f} s")


def run_faust(region: Region, requests: int, poll_s: float, timeout_s: float) -> dict[str, Any]:
    port = region.start_usage()
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
        try:
            counted = httpx.get(f"http://127.0.0.1:{port}/usage/", timeout=10).json()["requests"]
        except (httpx.HTTPError, ValueError):
            counted = 0
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
    region.stop("usage")
    return {
        "startup_s": round(first - started, 2),
        "counting_s": round(done - first, 2),
        "rate_wall": requests / max(done - first, 1e-9),
        "cpu_s": round(cpu_s, 2),
        "rate_cpu": requests / max(cpu_s, 1e-9),
        "counted": counted,
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
    rate_rps = tomllib.loads(SLO.read_text())["rate_rps"]
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
        faust = run_faust(region, args.requests, args.poll_ms / 1000, args.timeout_s)
    for name, figures in (("faust", faust), ("baseline", baseline)):
        if figures["counted"] != args.requests:
            raise SystemExit(f"{name} counted {figures['counted']:,} of {args.requests:,}")
    results |= {"faust": faust, "baseline": baseline}
    ratio_wall = faust["rate_wall"] / baseline["rate_wall"]
    ratio_cpu = faust["rate_cpu"] / baseline["rate_cpu"]
    core_at_slo = 100 * rate_rps / faust["rate_cpu"]
    results["ratios"] = {"wall": round(ratio_wall, 3), "cpu": round(ratio_cpu, 3)}
    results["faust_percent_of_one_core_at_slo_rate"] = round(core_at_slo, 2)
    print()
    print(f"{'':<34}{'events/s (wall)':>16}{'events/s per core':>19}{'CPU s':>8}")
    for label, figures in (("(a) faust usage worker", faust), ("(b) baseline loop", baseline)):
        print(
            f"{label:<34}{figures['rate_wall']:>16,.0f}{figures['rate_cpu']:>19,.0f}"
            f"{figures['cpu_s']:>8.1f}"
        )
    print(f"(a)/(b): wall {ratio_wall:.2f}x, per core {ratio_cpu:.2f}x")
    print(f"faust start-up until the first count: {faust['startup_s']:.1f} s")
    print(
        f"at {rate_rps} requests/s (slo.toml) the faust worker needs {core_at_slo:.1f}% of a core"
    )
    out = RESULTS / f"usage-{results['started']}.json"
    out.write_text(json.dumps(results, indent=2))
    say(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
