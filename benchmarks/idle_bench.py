"""What the service costs with no traffic: every process's CPU, against the broker alone.

(a) **baseline**: a fresh local broker with no client at all, idle for ``--seconds``.
(b) **service, just started**: the same broker with a whole region running on it, in the
    shape ``maas up`` runs (``DEFAULT_COUNTS`` of ledger processors, generator pools and
    API processes, and the observers: the usage worker, the audit checkpointer and the
    image sweeper), ready and folding, idle for ``--seconds``.
(c) **service, settled**: the same, ``--settle`` seconds later, idle for ``--seconds``:
    the idle cost of a service that runs for days. In its first minute the broker costs
    up to twice as much (start-up work: its JIT, the groups' first rounds), so (b) and
    (c) differ; (c) is the figure to hold against the target.

CPU comes from ``/proc/<pid>/stat`` (all threads, % of one core). Prints each process's
share, the totals of (b) and (c), the ratio of the broker's share in (c) to (a) (what
the clients' fetches cost the broker) and the machine's busy share; writes
``benchmarks/results/idle-<timestamp>.json``. Needs its own broker to measure it, so it
ignores ``KAFKA_BOOTSTRAP_SERVERS`` for the broker's figures (they are then absent).
``--smoke`` idles 1 s each, without settling: does it still run?
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
    parser.add_argument(
        "--settle", type=float, default=60.0, help="idle time between (b) and (c), unmeasured"
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds: does it still run?")
    args = parser.parse_args()
    seconds = 1.0 if args.smoke else args.seconds
    settle = 0.0 if args.smoke else args.settle
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
            region.start_observers()
            with CpuMeter({**broker, **region.pids()}) as started:
                time.sleep(seconds)  # the measured interval: the service idles
            assert started.report is not None
            say(f"(b) service idle, just started: {started.report.line()}")
            say(f"idling {settle:.0f} s more, unmeasured, before (c)")
            time.sleep(settle)  # start-up work ends: the broker's JIT, the groups' first rounds
            with CpuMeter({**broker, **region.pids()}) as idle:
                time.sleep(seconds)  # the measured interval: the service idles
            region.check_alive()
        assert idle.report is not None
        say(f"(c) service idle, settled: {idle.report.line()}")
    total = sum(idle.report.percent.values())
    broker_ratio = (
        idle.report.percent["broker"] / max(alone.report.percent["broker"], 0.1)
        if "broker" in idle.report.percent and "broker" in alone.report.percent
        else None
    )
    result = {
        "machine": machine,
        "seconds": seconds,
        "settle_seconds": settle,
        "baseline": alone.report.as_dict(),
        "service_just_started": started.report.as_dict(),
        "service": idle.report.as_dict(),
        "just_started_total_percent_of_one_core": round(sum(started.report.percent.values()), 1),
        "total_percent_of_one_core": round(total, 1),
        "broker_ratio": None if broker_ratio is None else round(broker_ratio, 2),
    }
    path = RESULTS / f"idle-{timestamp()}.json"
    path.write_text(json.dumps(result, indent=2))
    say(f"results: {path}")
    if idle.report.others_percent_of_machine > 10:
        say("WARNING: the machine was busy with other work; take the figures as preliminary")
    ratio = "n/a" if broker_ratio is None else f"{broker_ratio:.2f}x"
    print(f"idle: total={total:.1f}% of one core broker(c)/broker(a)={ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
