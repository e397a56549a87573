"""HTTP benchmark of ``GET /memes`` on a whole region, against a bare FastAPI baseline.

Starts a broker (or uses ``KAFKA_BOOTSTRAP_SERVERS``), a fresh region with every
process of the service (``benchmarks/common.py``), registers clients with plenty of
tokens, and serves ``benchmarks/bare_app.py`` (the same endpoint with no ledger) the
same way. Then, each against the service and the bare app:

1. **max throughput**: ``wrk`` closed loop (``--threads``/``--connections``/``--duration``)
   with ``benchmarks/memes.lua`` (rotating API keys, varied lat/lon/query);
2. **SLO run**: open loop at a constant ``--rate`` for ``--seconds`` from an asyncio +
   httpx generator that schedules every request by the clock and measures latency from
   its *scheduled* send time, so a stalled server cannot hide its queue (no coordinated
   omission); the SLOs of ``benchmarks/slo.toml`` are checked on the service's run;
3. optionally a **rate ladder** (``--ladder 100,200,400``): open-loop steps of
   ``--step-seconds``, each with the CPU % of every process (api, processor, generators,
   broker JVM, the load generator itself), up to the first step that breaks the SLO.

Prints the service/bare ratios, writes ``benchmarks/results/http-<timestamp>.json`` and
the plot ``docs/img/http-latency.png``. ``--check`` exits 1 if an SLO fails. ``--smoke``
runs each part for seconds at tiny sizes (the wrk part only if wrk is installed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from common import (
    IMG,
    LOGS,
    REPO,
    RESULTS,
    CpuMeter,
    CpuReport,
    Kafka,
    Region,
    free_port,
    kafka,
    machine_description,
    percentile,
    say,
    stop_on_sigterm,
    timestamp,
)

BENCH_DIR = Path(__file__).resolve().parent
QUERIES = ["food", "cats", "dogs", "monday", "coffee", "kafka", "rain", "pizza", "deadline"]
PERCENTILES = (50, 90, 95, 99)
SEND_LAG_WARN_MS = 20


# --------------------------------------------------------------------------- wrk


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    say("wrk not found: installing the Debian package with `apt-get install -y wrk`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "wrk"]
    if os.geteuid() != 0:
        install.insert(0, "sudo")
    if subprocess.run(install, env=env, check=False).returncode != 0:
        say("apt-get install failed: running `apt-get update` once, then installing again")
        subprocess.run([*install[:-4], "apt-get", "update"], env=env, check=False)
        subprocess.run(install, env=env, check=True)
    wrk = shutil.which("wrk")
    if not wrk:
        raise SystemExit("wrk is still not on PATH after apt-get install")
    return wrk


def run_wrk(
    wrk: str,
    url: str,
    keys_file: Path | None,
    args: argparse.Namespace,
    pids: dict[str, int | None],
) -> dict[str, Any]:
    cmd = [
        wrk,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        f"--timeout={args.timeout}s",
        "-s",
        str(BENCH_DIR / "memes.lua"),
        url,
    ]
    if keys_file is not None:
        cmd += ["--", str(keys_file)]
    say("running: " + " ".join(cmd))
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with CpuMeter(pids) as meter:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    summary: dict[str, Any] | None = None
    for line in proc.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            summary = json.loads(line.removeprefix("WRK_JSON "))
        elif not line.startswith(("Running", "  ")):
            print("    " + line)
    if summary is None:
        raise RuntimeError(f"no WRK_JSON line in wrk's output:\n{proc.stdout}")
    report = meter.report
    assert report is not None
    report.add(
        "wrk",
        (children_after.ru_utime - children_before.ru_utime)
        + (children_after.ru_stime - children_before.ru_stime),
    )
    print("    " + report.line())
    warn_if_shared(report)
    summary["cpu"] = report.as_dict()
    summary["command"] = " ".join(cmd)
    return summary


# --------------------------------------------------------------------------- open loop


@dataclass
class OpenLoopResult:
    rate: float
    seconds: float
    sent: int
    latencies_ms: list[float]  # sorted, every request (errors included)
    statuses: Counter[str]
    send_lag_p99_ms: float
    completed_in_s: float  # from the first to the last successful response
    done_at: dict[str, float]  # request_id of a 200 -> wall clock time of its response
    cpu: CpuReport | None = None
    stages: dict[str, Any] | None = None

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.startswith("2"))

    @property
    def errors(self) -> int:
        return self.sent - self.ok

    @property
    def error_ratio(self) -> float:
        return self.errors / self.sent if self.sent else 1.0

    @property
    def achieved_rps(self) -> float:
        """Successful responses per second, between the first and the last of them.

        A service that keeps up answers the last request as fast as the first, so the
        span equals the offered window; one that falls behind stretches it."""
        return (self.ok - 1) / self.completed_in_s if self.completed_in_s > 0 else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def line(self) -> str:
        errors = {s: n for s, n in sorted(self.statuses.items()) if not s.startswith("2")}
        return (
            f"offered {self.rate:g}/s for {self.seconds:g} s: sent {self.sent}, "
            f"achieved {self.achieved_rps:.1f} ok/s | latency ms p50 {self.p(50):.1f} "
            f"p95 {self.p(95):.1f} p99 {self.p(99):.1f} max {self.p(100):.1f} | "
            f"errors {self.errors} {errors or ''} | send lag p99 {self.send_lag_p99_ms:.1f} ms"
            + (
                " (LOAD GENERATOR BEHIND: its own delay is in the latency)"
                if self.send_lag_p99_ms > SEND_LAG_WARN_MS
                else ""
            )
        )

    def as_dict(self) -> dict[str, Any]:
        cdf = [[q / 2, round(self.p(q / 2), 3)] for q in range(1, 201)]
        cdf.insert(-1, [99.9, round(self.p(99.9), 3)])
        return {
            "offered_rps": self.rate,
            "seconds": self.seconds,
            "sent": self.sent,
            "ok": self.ok,
            "achieved_rps": round(self.achieved_rps, 2),
            "error_ratio": self.error_ratio,
            "statuses": dict(self.statuses),
            **{f"p{q}_ms": round(self.p(q), 3) for q in (50, 90, 95, 99, 99.9, 100)},
            "send_lag_p99_ms": round(self.send_lag_p99_ms, 3),
            "latency_percentiles_ms": cdf,
            "cpu": self.cpu.as_dict() if self.cpu else None,
            "stages": self.stages,
        }


async def open_loop(
    base_url: str, keys: list[str], rate: float, seconds: float, timeout_s: float, seed: int = 1
) -> OpenLoopResult:
    """Send ``rate`` requests/s for ``seconds``, each at its scheduled instant.

    Latency is measured from the scheduled instant, not from the actual send: if the
    generator or the server falls behind, the wait counts. The only sleeps are the
    waits until the next scheduled send (that is what "open loop" means).
    """
    rng = random.Random(seed)
    total = int(rate * seconds)
    latencies: list[float] = [0.0] * total
    statuses: Counter[str] = Counter()
    lags: list[float] = [0.0] * total
    done_at: dict[str, float] = {}
    ok_span = [float("inf"), 0.0]  # loop time of the first and the last 2xx
    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=1024, max_keepalive_connections=1024)
    timeout = httpx.Timeout(timeout_s, pool=timeout_s)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as http:

        async def one(i: int, scheduled: float, params: dict[str, str], headers: dict) -> None:
            try:
                response = await http.get("/memes", params=params, headers=headers)
                status = str(response.status_code)
                if response.status_code == 200:
                    done_at[response.json()["request_id"]] = time.time()
            except httpx.TimeoutException:
                status = "timeout"
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            now = loop.time()
            latencies[i] = (now - scheduled) * 1000
            statuses[status] += 1
            if status.startswith("2"):
                ok_span[0], ok_span[1] = min(ok_span[0], now), max(ok_span[1], now)

        tasks = []
        start = loop.time() + 0.05
        for i in range(total):
            params = {
                "lat": f"{rng.uniform(-90, 90):.6f}",
                "lon": f"{rng.uniform(-180, 180):.6f}",
                "query": rng.choice(QUERIES),
            }
            headers = {"Authorization": f"Bearer {keys[i % len(keys)]}"} if keys else {}
            scheduled = start + i / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lags[i] = (loop.time() - scheduled) * 1000
            tasks.append(asyncio.create_task(one(i, scheduled, params, headers)))
        await asyncio.gather(*tasks)
        completed_in = max(0.0, ok_span[1] - ok_span[0])
    return OpenLoopResult(
        rate=rate,
        seconds=seconds,
        sent=total,
        latencies_ms=sorted(latencies),
        statuses=statuses,
        send_lag_p99_ms=percentile(sorted(lags), 99),
        completed_in_s=completed_in,
        done_at=done_at,
    )


def measured_open_loop(
    base_url: str,
    keys: list[str],
    rate: float,
    seconds: float,
    timeout_s: float,
    pids: dict[str, int | None],
) -> OpenLoopResult:
    with CpuMeter(pids) as meter:
        result = asyncio.run(open_loop(base_url, keys, rate, seconds, timeout_s))
    result.cpu = meter.report
    return result


# --------------------------------------------------------------------------- stages

STAGES = (
    ("append_to_decision", "api append -> ledger decision (approval produced)"),
    ("decision_to_meme", "decision -> meme made (txn commit, generator fetch, render)"),
    ("meme_to_reply", "meme made -> reply decided (outcome fetch, next batch)"),
    ("reply_to_response", "reply decided -> HTTP response (txn commit, api fetch)"),
    ("append_to_response", "total: api append -> HTTP response"),
)


def stage_breakdown(bootstrap: str, region: str, done_at: dict[str, float]) -> dict[str, Any]:
    """Where a request's time goes, from the Kafka timestamps of its events.

    Every message carries the time its producer called ``produce`` (CreateTime, ms):
    the API's ``MemeRequested``, the ledger's ``MemeApproved`` (in its transaction),
    the generator's ``MemeGenerated`` and the ledger's ``Reply``. Joined by request id
    (and the reply's correlation id), with the client's receive time of the response.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from core.topics import Topics

    topics = Topics(region)
    names = [topics.requests, topics.approved("standard"), topics.approved("ai")]
    names += [topics.outcomes, topics.replies]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-stages-{os.getpid()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    requested: dict[str, tuple[int, str]] = {}  # request_id -> (ms, event_id)
    approved: dict[str, int] = {}
    made: dict[str, int] = {}
    replied: dict[str, int] = {}  # correlation_id -> ms
    try:
        metadata = consumer.list_topics(timeout=10)
        assignment = [
            TopicPartition(name, p, OFFSET_BEGINNING)
            for name in names
            for p in metadata.topics[name].partitions
        ]
        consumer.assign(assignment)
        pending = {(tp.topic, tp.partition) for tp in assignment}
        give_up = time.monotonic() + 120
        while pending and time.monotonic() < give_up:
            for msg in consumer.consume(1000, 1.0):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard((msg.topic(), msg.partition()))
                    continue
                event = json.loads(msg.value())
                ms = msg.timestamp()[1]
                topic = msg.topic()
                if topic == topics.requests:
                    if event.get("type") == "MemeRequested":
                        requested[event["request_id"]] = (ms, event["event_id"])
                elif topic == topics.outcomes:
                    made.setdefault(event["request_id"], ms)
                elif topic == topics.replies:
                    replied.setdefault(event["correlation_id"], ms)
                else:
                    approved.setdefault(event["request_id"], ms)
    finally:
        consumer.close()
    series: dict[str, list[float]] = {key: [] for key, _ in STAGES}
    for request_id, done in done_at.items():
        if request_id not in requested:
            continue
        t_req, event_id = requested[request_id]
        t_appr, t_made, t_reply = (
            approved.get(request_id),
            made.get(request_id),
            replied.get(event_id),
        )
        if t_appr is None or t_made is None or t_reply is None:
            continue
        done_ms = done * 1000
        series["append_to_decision"].append(t_appr - t_req)
        series["decision_to_meme"].append(t_made - t_appr)
        series["meme_to_reply"].append(t_reply - t_made)
        series["reply_to_response"].append(done_ms - t_reply)
        series["append_to_response"].append(done_ms - t_req)
    out: dict[str, Any] = {"requests_joined": len(series["append_to_response"])}
    for key, values in series.items():
        values.sort()
        out[key] = {f"p{q}_ms": round(percentile(values, q), 1) for q in (50, 90, 99)}
    return out


def print_stages(stages: dict[str, Any]) -> None:
    print(f"    where the time goes ({stages['requests_joined']} requests, Kafka timestamps):")
    for key, label in STAGES:
        s = stages[key]
        print(
            f"      {label:62} p50 {s['p50_ms']:7.1f}  p90 {s['p90_ms']:7.1f}  "
            f"p99 {s['p99_ms']:7.1f} ms"
        )


# --------------------------------------------------------------------------- SLOs


def load_slo(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def check_slo(result: OpenLoopResult, slo: dict[str, Any]) -> list[tuple[str, bool, str]]:
    checks = []
    need = slo["rate_rps"] * slo.get("achieved_ratio_min", 0.99)
    checks.append(
        (
            "rate",
            result.rate >= slo["rate_rps"] and result.achieved_rps >= need,
            f"offered {result.rate:g}/s, achieved {result.achieved_rps:.1f} ok/s "
            f"(need >= {need:g} at an offered {slo['rate_rps']}/s)",
        )
    )
    checks.append(
        (
            "p99",
            result.p(99) <= slo["p99_ms"],
            f"{result.p(99):.1f} ms (need <= {slo['p99_ms']} ms)",
        )
    )
    if "p95_ms" in slo:
        checks.append(
            (
                "p95",
                result.p(95) <= slo["p95_ms"],
                f"{result.p(95):.1f} ms (need <= {slo['p95_ms']} ms)",
            )
        )
    checks.append(
        (
            "errors",
            result.error_ratio <= slo["error_ratio_max"],
            f"{result.errors}/{result.sent} = {result.error_ratio:.4%} "
            f"(need <= {slo['error_ratio_max']:.2%})",
        )
    )
    return checks


def step_passes(result: OpenLoopResult, slo: dict[str, Any]) -> bool:
    return (
        result.p(99) <= slo["p99_ms"]
        and result.error_ratio <= slo["error_ratio_max"]
        and result.achieved_rps >= result.rate * slo.get("achieved_ratio_min", 0.99)
    )


# --------------------------------------------------------------------------- bare app


@contextlib.contextmanager
def bare_app(log_dir: Path):
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
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


# --------------------------------------------------------------------------- output


def warn_if_shared(report: CpuReport) -> None:
    if report.others_percent_of_machine > 10:
        print(
            f"    WARNING: {report.others_percent_of_machine:.0f}% of the machine went to "
            "processes that are not part of this benchmark: figures are preliminary"
        )


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def plot(results: dict[str, Any], path: Path, slo: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    if "slo_run" in results:
        panels.append("cdf")
    if "wrk" in results:
        panels.append("wrk")
    if results.get("ladder"):
        panels.append("ladder")
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "cdf":
            run = results["slo_run"]
            for name, style in (("service", "-"), ("bare", "--")):
                if name in run:
                    points = run[name]["latency_percentiles_ms"]
                    ax.plot(
                        [ms for _, ms in points],
                        [q for q, _ in points],
                        style,
                        label=f"{name} (p99 {run[name]['p99_ms']:.0f} ms)",
                    )
            ax.axvline(slo["p99_ms"], color="red", lw=0.8, ls=":", label="SLO p99")
            ax.set_xscale("log")
            ax.set_xlabel("latency from scheduled send (ms, log)")
            ax.set_ylabel("percentile")
            ax.set_title(f"open loop {run['service']['offered_rps']:g} req/s: latency CDF")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        elif panel == "wrk":
            wrk = results["wrk"]
            width = 0.38
            xs = range(len(PERCENTILES))
            for k, name in enumerate(("service", "bare")):
                if name in wrk:
                    values = [wrk[name][f"p{q}_ms"] for q in PERCENTILES]
                    ax.bar(
                        [x + (k - 0.5) * width for x in xs],
                        values,
                        width,
                        label=f"{name}: {wrk[name]['rps']:.0f} req/s",
                    )
            ax.set_xticks(list(xs), [f"p{q}" for q in PERCENTILES])
            ax.set_yscale("log")
            ax.set_ylabel("latency (ms, log)")
            ax.set_title(f"wrk closed loop, {wrk['settings']}")
            ax.grid(alpha=0.3, axis="y")
            ax.legend(fontsize=8)
        else:
            steps = results["ladder"]
            rates = [s["offered_rps"] for s in steps]
            ax.plot(rates, [s["p50_ms"] for s in steps], "o-", label="p50")
            ax.plot(rates, [s["p99_ms"] for s in steps], "s-", label="p99")
            ax.axhline(slo["p99_ms"], color="red", lw=0.8, ls=":", label="SLO p99")
            ax.set_yscale("log")
            low = min([s["p50_ms"] for s in steps] + [slo["p99_ms"]])
            high = max([s["p99_ms"] for s in steps] + [slo["p99_ms"]])
            ax.set_ylim(low / 1.5, high * 1.5)
            ax.set_xlabel("offered rate (req/s)")
            ax.set_ylabel("latency (ms, log)")
            ax.set_title("rate ladder (service)")
            ax.grid(alpha=0.3)
            ax2 = ax.twinx()
            ax2.plot(rates, [s["achieved_rps"] for s in steps], "^:", color="gray")
            ax2.set_ylabel("achieved ok/s (gray)")
            ax.legend(fontsize=8, loc="upper left")
    title = f"GET /memes: service vs bare FastAPI, {results['machine']['nproc']} cores"
    others = [
        run["cpu"]["others_percent_of_machine"]
        for run in [*results.get("slo_run", {}).values(), *results.get("ladder", [])]
        if isinstance(run, dict) and run.get("cpu")
    ]
    if others and max(others) > 10:
        title += f" (PRELIMINARY: up to {max(others):.0f}% of the machine used by other work)"
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    say(f"plot written: {path}")


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slo", type=Path, default=BENCH_DIR / "slo.toml")
    parser.add_argument("--clients", type=int, default=20, help="clients (API keys) to rotate")
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
    parser.add_argument("--warmup", type=float, default=5, help="open-loop warm-up, seconds")
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
    parser.add_argument("--png", type=Path, default=IMG / "http-latency.png")
    parser.add_argument("--check", action="store_true", help="exit 1 if an SLO fails")
    parser.add_argument(
        "--smoke", action="store_true", help="seconds, tiny sizes; wrk only if it is installed"
    )
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.tokens, args.duration, args.connections = 2, 1_000, 2, 4
        args.rate, args.seconds, args.warmup, args.idle_seconds = 10.0, 2.0, 0.0, 0.0
        args.ladder = ""
        args.png = RESULTS / "http-smoke.png"  # the documented plot stays as measured
    return args


def find_wrk(args: argparse.Namespace) -> str | None:
    """wrk for the closed-loop run; a smoke does not install it (a full run does)."""
    if args.skip_wrk:
        return None
    if not args.smoke:
        return ensure_wrk()
    wrk = shutil.which("wrk")
    if wrk is None:
        say("wrk is not installed: the smoke skips the closed-loop run (a full run installs it)")
    return wrk


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
        region.start_service()
        clients = region.register_clients(args.clients, args.tokens)
        keys = [c.api_key for c in clients]
        keys_file = RESULTS / f"keys-{region.name}.txt"
        keys_file.write_text("\n".join(keys) + "\n")
        results["region"] = region.name
        try:
            with contextlib.ExitStack() as stack:
                bare_url, bare_pid = (
                    (None, None) if args.no_bare else stack.enter_context(bare_app(region.log_dir))
                )
                failed = run_all(
                    args, results, slo, rate, seconds, ladder, wrk, cluster, region, keys,
                    keys_file, bare_url, bare_pid,
                )  # fmt: skip
        finally:
            keys_file.unlink(missing_ok=True)
            say(f"logs of this run: {region.log_dir}")
    out = RESULTS / f"http-{results['started']}.json"
    out.write_text(json.dumps(results, indent=2))
    say(f"results written: {out}")
    plot(results, args.png, slo)
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
    keys: list[str],
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
    targets = [("service", region.base_url, keys)]
    if bare_url:
        targets.append(("bare", bare_url, []))

    if args.idle_seconds > 0:
        say(f"idle: CPU of every process with no traffic for {args.idle_seconds:g} s")
        with CpuMeter(pids) as meter:
            time.sleep(args.idle_seconds)  # nothing to do: this measures the idle cost
        assert meter.report is not None
        print("    " + meter.report.line())
        warn_if_shared(meter.report)
        results["idle_cpu"] = meter.report.as_dict()

    if args.warmup > 0:
        for name, url, target_keys in targets:
            say(f"warm-up {name}: open loop {rate:g}/s for {args.warmup:g} s (not recorded)")
            warm = asyncio.run(open_loop(url, target_keys, rate, args.warmup, args.timeout))
            print("    " + warm.line())
        region.check_alive()

    if wrk:
        results["wrk"] = {"settings": f"-t{args.threads} -c{args.connections} -d{args.duration}s"}
        for name, url, _ in targets:
            region.wait_drained()
            say(f"max throughput, {name}: wrk closed loop")
            results["wrk"][name] = run_wrk(
                wrk, url, keys_file if name == "service" else None, args, pids
            )
            region.check_alive()
        service = results["wrk"]["service"]
        print(f"\n  wrk {results['wrk']['settings']}")
        print(f"  {'':8} {'req/s':>9} {'p50':>8} {'p90':>8} {'p95':>8} {'p99':>8} {'non-2xx':>8}")
        for name, _, _ in targets:
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
        for name, url, target_keys in targets:
            region.wait_drained()
            say(f"SLO run, {name}: open loop {rate:g} req/s for {seconds:g} s")
            runs[name] = measured_open_loop(url, target_keys, rate, seconds, args.timeout, pids)
            print("    " + runs[name].line())
            assert runs[name].cpu is not None
            print("    " + runs[name].cpu.line())
            warn_if_shared(runs[name].cpu)
            if name == "service" and not args.no_stages:
                runs[name].stages = stage_breakdown(
                    cluster.bootstrap, region.name, runs[name].done_at
                )
                print_stages(runs[name].stages)
            results["slo_run"][name] = runs[name].as_dict()
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
                region.base_url, keys, step_rate, args.step_seconds, args.timeout, pids
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
    return failed


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        say(f"interrupted; processes stopped, logs in {LOGS}")
        sys.exit(130)
