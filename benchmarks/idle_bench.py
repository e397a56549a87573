"""What the service costs with no traffic: every process's CPU, against the broker alone.

(a) **baseline**: a fresh local broker with no client at all, idle for ``--seconds``.
(b) **service**: the same broker with a whole region running on it, in the shape
    ``maas up`` runs (``DEFAULT_COUNTS`` of ledger processors, generator pools and API
    processes), ready and folding, idle for ``--seconds``.

CPU comes from ``/proc/<pid>/stat`` (all threads, % of one core). Prints each process's
share, the total of (b), the ratio of the broker's share in (b) to (a) (what the
clients' fetches cost the broker) and the machine's busy share; writes
``benchmarks/results/idle-<timestamp>.json``. Needs its own broker to measure it, so it
ignores ``KAFKA_BOOTSTRAP_SERVERS`` for the broker's figures (they are then absent).
``--smoke`` idles 2 s each: does it still run?
"""

from __future__ import annotations

import argparse
import json
import time

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="idle time measured, each")
    parser.add_argument("--smoke", action="store_true", help="a few seconds: does it still run?")
    args = parser.parse_args()
    seconds = 2.0 if args.smoke else args.seconds
    stop_on_sigterm()
    machine = machine_description()
    with kafka() as cluster:
        broker = {"broker": cluster.pid()}
        with CpuMeter(broker) as alone:
            time.sleep(seconds)  # the measured interval: nothing runs but the broker
        assert alone.report is not None
        say(f"(a) broker alone: {alone.report.line()}")
        with Region(cluster) as region:
            region.create_topics()
            region.start_service()
            with CpuMeter({**broker, **region.pids()}) as idle:
                time.sleep(seconds)  # the measured interval: the service idles
            region.check_alive()
        assert idle.report is not None
        say(f"(b) service idle: {idle.report.line()}")
    total = sum(idle.report.percent.values())
    broker_ratio = (
        idle.report.percent["broker"] / max(alone.report.percent["broker"], 0.1)
        if "broker" in idle.report.percent and "broker" in alone.report.percent
        else None
    )
    result = {
        "machine": machine,
        "seconds": seconds,
        "baseline": alone.report.as_dict(),
        "service": idle.report.as_dict(),
        "total_percent_of_one_core": round(total, 1),
        "broker_ratio": None if broker_ratio is None else round(broker_ratio, 2),
    }
    path = RESULTS / f"idle-{timestamp()}.json"
    path.write_text(json.dumps(result, indent=2))
    say(f"results: {path}")
    if idle.report.others_percent_of_machine > 10:
        say("WARNING: the machine was busy with other work; take the figures as preliminary")
    ratio = "n/a" if broker_ratio is None else f"{broker_ratio:.2f}x"
    print(f"idle: total={total:.1f}% of one core broker(b)/broker(a)={ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
