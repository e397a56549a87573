"""HTTP benchmark of ``GET /memes`` on a whole region, against a bare FastAPI baseline.

Starts a broker (or uses ``KAFKA_BOOTSTRAP_SERVERS``), a fresh region with every
process ``maas up`` runs (``benchmarks/common.py``; the observers too, unless
``--no-observers``), registers clients with plenty of
tokens, and serves ``benchmarks/bare_app.py`` (the same endpoint with no ledger) the
same way. Then, each against the service and the bare app:

1. **max throughput**: ``wrk`` closed loop (``--threads``/``--connections``/``--duration``)
   with ``benchmarks/memes.lua`` (rotating API keys, varied lat/lon/query);
2. **SLO run**: open loop at a constant ``--rate`` for ``--seconds`` from vegeta
   (``http_open_loop.py``), latency measured from each request's *scheduled* send time,
   so a stalled server cannot hide its queue (no coordinated omission), with the
   requests of ``--workload`` (``workload.py``: ``realistic`` by default, or ``new``,
   every meme new); the SLOs of ``benchmarks/slo.toml`` are checked on the service's run;
3. optionally a **rate ladder** (``--ladder 100,200,400``): open-loop steps of
   ``--step-seconds``, each with the CPU % of every process (api, processor, generators,
   broker JVM, vegeta itself), up to the first step that breaks the SLO.

Prints the service/bare ratios, writes ``benchmarks/results/http-<timestamp>.json`` and
its plot beside it (``--png docs/img/http-latency.png`` renews the documented one).
``--check`` exits 1 if an SLO fails. ``--smoke``
runs each part for seconds at tiny sizes (the wrk part only if wrk is installed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from common import (
    LOGS,
    REPO,
    RESULTS,
    Client,
    CpuMeter,
    Kafka,
    Region,
    free_port,
    kafka,
    machine_description,
    say,
    stop_on_sigterm,
    timestamp,
)
from http_open_loop import OpenLoopResult, measured_open_loop
from http_report import plot, ratio, warn_if_shared
from http_slo import check_overload, check_slo, load_slo, step_passes
from http_stages import STAGES, print_stages, stage_breakdown
from http_wrk import find_wrk, run_wrk
from workload import WORKLOADS, Request, WorkloadClient, ai_count, place_clients, plan

from maas.processes import DEFAULT_COUNTS, reap

BENCH_DIR = Path(__file__).resolve().parent


@contextlib.contextmanager
def bare_app(log_dir: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    log_path = log_dir / "bare.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "bare_app.py"), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    say(f"started bare app pid={proc.pid} port={port} log={log_path}")
    try:
        url = f"http://127.0.0.1:{port}"
        give_up = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bare app exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > give_up:
                    raise
            time.sleep(0.1)  # start-up poll
        yield url, proc.pid
    finally:
        proc.terminate()
        reap(proc, 15)


def subscribe_ai(region: Region, clients: list[Client]) -> None:
    """Memes AI for ``clients``, through the billing API."""
    for client in clients:
        response = region.http.put(
            f"/v1/clients/{client.client_id}/subscription", headers=region.billing
        )
        if response.status_code != 200:
            raise RuntimeError(f"subscribe: {response.status_code} {response.text}")
    say(f"{len(clients)} clients subscribed to Memes AI")


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slo", type=Path, default=BENCH_DIR / "slo.toml")
    parser.add_argument("--clients", type=int, default=100, help="clients (API keys)")
    parser.add_argument(
        "--workload", choices=WORKLOADS, default="realistic", help="see benchmarks/workload.py"
    )
    # What `maas up` runs, so that a figure and --check describe the shipped shape.
    for flag, kind in (
        ("api", "api"),
        ("processors", "processor"),
        ("generators-standard", "generator-standard"),
        ("generators-ai", "generator-ai"),
    ):
        parser.add_argument(
            f"--{flag}",
            type=int,
            default=DEFAULT_COUNTS[kind],
            help=f"{kind} processes (default %(default)s, as maas up)",
        )
    parser.add_argument(
        "--no-observers",
        action="store_true",
        help="without the observers maas up also runs (usage, checkpointer, sweeper)",
    )
    parser.add_argument("--tokens", type=int, default=10_000_000, help="tokens per client")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c")
    parser.add_argument("--duration", type=int, default=30, help="wrk -d, seconds")
    parser.add_argument("--rate", type=float, help="SLO run rate (default: slo.toml rate_rps)")
    parser.add_argument("--seconds", type=float, help="SLO run length (default: slo.toml)")
    parser.add_argument("--ladder", default="", help="rates for the ladder, e.g. 100,200,400")
    parser.add_argument("--step-seconds", type=float, default=20, help="length of a step")
    parser.add_argument(
        "--ladder-all", action="store_true", help="run every step, not only up to the first miss"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=60,
        # A fresh broker's JIT compiles for its first minute of traffic: at 100/s it used
        # 93, 90, 85, 74, 64 and 54% of a core in the first six 10 s windows, and the p99
        # fell from 2.2 s to 96 ms (performance.md, HTTP, fourteenth session).
        help="open-loop warm-up, seconds (a fresh broker's JIT needs ~60)",
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=5, help="CPU with no traffic first, seconds"
    )
    parser.add_argument("--timeout", type=float, default=10, help="client timeout, seconds")
    parser.add_argument("--skip-wrk", action="store_true")
    parser.add_argument("--skip-slo", action="store_true")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare baseline")
    parser.add_argument(
        "--no-stages", action="store_true", help="skip the per-stage latency breakdown"
    )
    parser.add_argument(
        "--overload",
        action="store_true",
        help="last: offer slo.toml's [overload] factor x --capacity, then --capacity",
    )
    parser.add_argument(
        "--capacity", type=float, help="req/s the overload run takes as capacity (rate_rps)"
    )
    parser.add_argument("--overload-seconds", type=float, help="default: [overload] seconds")
    parser.add_argument("--after-seconds", type=float, help="default: [overload] after_s")
    parser.add_argument(
        "--png", type=Path, help="the plot; default: beside the results, as http-<time>.png"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if an SLO fails")
    parser.add_argument(
        "--smoke", action="store_true", help="seconds, tiny sizes; wrk only if it is installed"
    )
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.tokens, args.duration, args.connections = 5, 1_000, 2, 4
        args.rate, args.seconds, args.warmup, args.idle_seconds = 10.0, 1.0, 0.0, 0.0
        args.ladder = ""
        args.overload, args.capacity = True, 10.0
        args.overload_seconds, args.after_seconds = 1.0, 1.0
    return args


def main() -> int:
    args = parse_args()
    stop_on_sigterm()
    slo = load_slo(args.slo)
    rate = args.rate or float(slo["rate_rps"])
    seconds = args.seconds or float(slo.get("duration_s", 30))
    ladder = [float(r) for r in args.ladder.split(",") if r.strip()]
    wrk = find_wrk(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "benchmark": "http",
        "started": timestamp(),
        "machine": machine_description(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "slo": slo,
        "env": {k: v for k, v in os.environ.items() if k.startswith("MAAS_")},
    }
    say(f"machine: {results['machine']}")
    failed = False
    with kafka() as cluster, Region(cluster) as region:
        region.create_topics()
        region.start_service(
            processors=args.processors,
            generators_standard=args.generators_standard,
            generators_ai=args.generators_ai,
            api=args.api,
        )
        if not args.no_observers:
            region.start_observers()
        clients = region.register_clients(args.clients, args.tokens)
        keys = [c.api_key for c in clients]
        subscribe_ai(region, clients[: ai_count(len(clients))])
        population = place_clients(keys, {c.api_key for c in clients[: ai_count(len(clients))]})
        keys_file = RESULTS / f"keys-{region.name}.txt"
        keys_file.write_text("\n".join(keys) + "\n")
        results["region"] = region.name
        try:
            with contextlib.ExitStack() as stack:
                bare_url, bare_pid = (
                    (None, None) if args.no_bare else stack.enter_context(bare_app(region.log_dir))
                )
                failed = run_all(
                    args, results, slo, rate, seconds, ladder, wrk, cluster, region,
                    population, keys_file, bare_url, bare_pid,
                )  # fmt: skip
        finally:
            keys_file.unlink(missing_ok=True)
            say(f"logs of this run: {region.log_dir}")
    out = RESULTS / f"http-{results['started']}.json"
    out.write_text(json.dumps(results, indent=2))
    say(f"results written: {out}")
    plot(results, args.png or out.with_suffix(".png"), slo)
    return 1 if failed and args.check else 0


def run_all(
    args: argparse.Namespace,
    results: dict[str, Any],
    slo: dict[str, Any],
    rate: float,
    seconds: float,
    ladder: list[float],
    wrk: str | None,
    cluster: Kafka,
    region: Region,
    population: list[WorkloadClient],
    keys_file: Path,
    bare_url: str | None,
    bare_pid: int | None,
) -> bool:
    pids: dict[str, int | None] = {
        **region.pids(),
        "broker": cluster.pid(),
        "bench": os.getpid(),
        "bare": bare_pid,
    }
    targets = [("service", region.base_url)]
    if bare_url:
        targets.append(("bare", bare_url))
    runs_planned = 0

    def requests(step_rate: float, step_seconds: float) -> list[Request]:
        # Each run its own requests (a seed per run), the same for the service and bare.
        nonlocal runs_planned
        runs_planned += 1
        count = round(step_rate * step_seconds)
        return plan(population, args.workload, count, step_rate, seed=runs_planned)

    if args.idle_seconds > 0:
        say(f"idle: CPU of every process with no traffic for {args.idle_seconds:g} s")
        with CpuMeter(pids) as meter:
            time.sleep(args.idle_seconds)  # nothing to do: this measures the idle cost
        assert meter.report is not None
        print("    " + meter.report.line())
        warn_if_shared(meter.report)
        results["idle_cpu"] = meter.report.as_dict()

    if args.warmup > 0:
        warm_requests = requests(rate, args.warmup)
        for name, url in targets:
            say(f"warm-up {name}: open loop {rate:g}/s for {args.warmup:g} s (not recorded)")
            warm = measured_open_loop(url, warm_requests, rate, args.warmup, args.timeout, {})
            print("    " + warm.line())
        region.check_alive()

    if wrk:
        results["wrk"] = {"settings": f"-t{args.threads} -c{args.connections} -d{args.duration}s"}
        for name, url in targets:
            region.wait_drained()
            say(f"max throughput, {name}: wrk closed loop")
            results["wrk"][name] = run_wrk(
                wrk, url, keys_file if name == "service" else None, args, pids
            )
            region.check_alive()
        service = results["wrk"]["service"]
        print(f"\n  wrk {results['wrk']['settings']}")
        print(f"  {'':8} {'req/s':>9} {'p50':>8} {'p90':>8} {'p95':>8} {'p99':>8} {'non-2xx':>8}")
        for name, _ in targets:
            r = results["wrk"][name]
            print(
                f"  {name:8} {r['rps']:9.1f} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} "
                f"{r['p95_ms']:8.2f} {r['p99_ms']:8.2f} {r['non_2xx']:8d}"
            )
        if "bare" in results["wrk"]:
            bare = results["wrk"]["bare"]
            results["wrk"]["ratio_rps"] = service["rps"] / bare["rps"]
            results["wrk"]["ratio_p99"] = service["p99_ms"] / bare["p99_ms"]
            print(
                f"  service/bare: rps {ratio(service['rps'], bare['rps'])}, "
                f"p99 {ratio(service['p99_ms'], bare['p99_ms'])}\n"
            )

    failed = False
    if not args.skip_slo:
        results["slo_run"] = {}
        runs: dict[str, OpenLoopResult] = {}
        slo_requests = requests(rate, seconds)
        for name, url in targets:
            region.wait_drained()
            say(f"SLO run, {name}: open loop {rate:g} req/s for {seconds:g} s, {args.workload}")
            run = measured_open_loop(url, slo_requests, rate, seconds, args.timeout, pids)
            runs[name] = run
            print("    " + run.line())
            assert run.cpu is not None
            print("    " + run.cpu.line())
            print("    " + run.cpu.memory_line())
            warn_if_shared(run.cpu)
            if name == "service" and not args.no_stages:
                stages = stage_breakdown(cluster.bootstrap, region.name, run.done_at)
                run.stages = stages
                print_stages(stages)
            results["slo_run"][name] = run.as_dict()
            region.check_alive()
        service_run = runs["service"]
        if "bare" in runs:
            bare_run = runs["bare"]
            results["slo_run"]["ratio_p99"] = service_run.p(99) / bare_run.p(99)
            results["slo_run"]["ratio_p50"] = service_run.p(50) / bare_run.p(50)
            print(
                f"  service/bare at {rate:g} req/s: p50 {ratio(service_run.p(50), bare_run.p(50))}"
                f", p99 {ratio(service_run.p(99), bare_run.p(99))}"
            )
        print(f"\n  SLOs ({args.slo}):")
        checks = check_slo(service_run, slo)
        for name, ok, detail in checks:
            print(f"    {'PASS' if ok else 'FAIL'}  {name:7} {detail}")
        results["slo_checks"] = [{"slo": n, "pass": ok, "detail": d} for n, ok, d in checks]
        failed = not all(ok for _, ok, _ in checks)
        if rate != slo["rate_rps"]:
            print(f"    (offered {rate:g}/s, not the SLO's {slo['rate_rps']}/s: rate check fails)")
        print()

    if ladder:
        results["ladder"] = []
        best = None
        for step_rate in ladder:
            region.wait_drained()
            say(f"ladder step: open loop {step_rate:g} req/s for {args.step_seconds:g} s")
            step = measured_open_loop(
                region.base_url,
                requests(step_rate, args.step_seconds),
                step_rate,
                args.step_seconds,
                args.timeout,
                pids,
            )
            passed = step_passes(step, slo)
            assert step.cpu is not None
            busiest, busiest_pct = step.cpu.busiest()
            print(f"    {'PASS' if passed else 'MISS'} " + step.line())
            print(f"         {step.cpu.line()}")
            print(f"         busiest process: {busiest} at {busiest_pct:.0f}% of one core")
            if not args.no_stages:
                step.stages = stage_breakdown(cluster.bootstrap, region.name, step.done_at)
                print(
                    "         stage p50 ms: "
                    + "  ".join(f"{key}={step.stages[key]['p50_ms']:.0f}" for key, _ in STAGES)
                )
            warn_if_shared(step.cpu)
            results["ladder"].append({**step.as_dict(), "pass": passed})
            region.check_alive()
            if passed:
                best = step_rate
            elif not args.ladder_all:
                break
        results["ladder_best_rps"] = best
        print(
            f"\n  highest offered rate meeting the SLO (p99 <= {slo['p99_ms']} ms, errors <= "
            f"{slo['error_ratio_max']:.2%}): {best if best is not None else 'none'} req/s"
        )
        print(f"  {'rate':>6} {'ok/s':>7} {'p99 ms':>8}  cpu % of one core")
        for s in results["ladder"]:
            cpu = s["cpu"]["percent_of_one_core"]
            shown = " ".join(f"{k}={v:.0f}" for k, v in cpu.items() if k != "bare")
            print(
                f"  {s['offered_rps']:6g} {s['achieved_rps']:7.1f} {s['p99_ms']:8.1f}  {shown} "
                f"| machine {s['cpu']['machine_busy_percent']:.0f}% "
                f"(others {s['cpu']['others_percent_of_machine']:.0f}%)"
            )
    if args.overload:
        capacity = args.capacity or float(slo["rate_rps"])
        failed |= overload_run(args, results, slo, capacity, region, pids, requests)
    return failed


def overload_run(
    args: argparse.Namespace,
    results: dict[str, Any],
    slo: dict[str, Any],
    capacity: float,
    region: Region,
    pids: dict[str, int | None],
    requests: Callable[[float, float], list[Request]],
) -> bool:
    """``factor`` x ``capacity`` for ``seconds``, then ``capacity`` for ``after_s`` with
    no pause: is the excess refused fast, does goodput hold, and how soon is latency
    back? Returns True if an objective of ``[overload]`` failed."""
    objectives = slo["overload"]
    over_rate = capacity * objectives["factor"]
    over_s = args.overload_seconds or float(objectives["seconds"])
    after_s = args.after_seconds or float(objectives["after_s"])
    region.wait_drained()
    say(f"overload: {over_rate:g}/s for {over_s:g} s, then {capacity:g}/s for {after_s:g} s")
    over_requests, after_requests = requests(over_rate, over_s), requests(capacity, after_s)
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        over_future = pool.submit(
            measured_open_loop, region.base_url, over_requests, over_rate, over_s,
            args.timeout, pids,
        )  # fmt: skip
        # The second load starts when the first one's send window ends, as an open loop
        # schedules it, while the overload's last answers are still coming in.
        time.sleep(max(0.0, started + over_s - time.monotonic()))
        after = measured_open_loop(
            region.base_url, after_requests, capacity, after_s, args.timeout, {}
        )
        # Its meter held vegeta only (the windows overlap; the service's CPU is in
        # `over`), so its "not ours" share counted the whole service: not a figure.
        after.cpu = None
        over = over_future.result()
    assert over.cpu is not None
    print("    overload " + over.line())
    if over.refusals_by_error:
        print("         refused: " + over.refusals_line())
    print("         " + over.cpu.line())
    print("    after    " + after.line())
    checks = check_overload(over, after, capacity, slo)
    for name, ok, detail in checks:
        print(f"    {'PASS' if ok else 'FAIL'}  {name:8} {detail}")
    results["overload"] = {
        "capacity_rps": capacity,
        "over": over.as_dict(),
        "after": after.as_dict(),
        "checks": [{"slo": n, "pass": ok, "detail": d} for n, ok, d in checks],
    }
    region.check_alive()
    return not all(ok for _, ok, _ in checks)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        say(f"interrupted; processes stopped, logs in {LOGS}")
        sys.exit(130)
