"""The open-loop load of ``http_bench.py``: vegeta, and its latency bookkeeping.

vegeta (a compiled load generator, ``scripts/bootstrap.sh`` installs it into
``.maas/bin``) sends the workload's requests at a constant rate, each at its scheduled
instant whether or not earlier ones have been answered. A Python generator needed most
of a core at 100 requests/s on this 2-core machine and fell behind, so it measured
itself; vegeta needs a few percent, and its own CPU is reported beside the service's.

Latency counts from the *scheduled* instant, so neither a stalled server nor a late
generator can hide a queue (no coordinated omission): vegeta's pacer schedules request
``seq`` at ``seq / rate`` after the attack began and stamps a result when a worker
takes the tick, so its lag is ``timestamp - (began + seq / rate)``, and a request's
latency is that lag plus vegeta's own latency.

``OpenLoopResult`` holds what one run saw (latencies, statuses, lag, the receive time
of every answered request for the stage breakdown) and prints and serialises it.
"""

from __future__ import annotations

import base64
import json
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import vegeta_tool
from common import CpuMeter, CpuReport, percentile
from workload import Request

SEND_LAG_WARN_MS = 20


def vegeta_binary() -> Path:
    binary = vegeta_tool.installed()
    if binary is None:
        raise SystemExit(
            f"vegeta is not at {vegeta_tool.BINARY}: run scripts/bootstrap.sh (it installs "
            "vegeta with go install when go is on PATH)"
        )
    return binary


@dataclass
class OpenLoopResult:
    rate: float
    seconds: float
    sent: int
    latencies_ms: list[float]  # sorted, every request (errors included), from its schedule
    statuses: Counter[str]
    send_lag_p99_ms: float
    completed_in_s: float  # from the first to the last successful response
    done_at: dict[str, float]  # request_id of a 200 -> wall clock time of its first response
    # the 429 and 503 answers by the problem's ``error`` code ("overloaded", "not_ready",
    # ...): the sorted latencies of each, to tell which limit refused slowly
    refusals_by_error: dict[str, list[float]]
    # (scheduled instant in s from the start, latency ms, HTTP code or 0), in send order
    timeline: list[tuple[float, float, int]]
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

    @property
    def refusal_latencies_ms(self) -> list[float]:
        """Sorted, of every refusal."""
        return sorted(ms for latencies in self.refusals_by_error.values() for ms in latencies)

    def refusals_line(self) -> str:
        return ", ".join(
            f"{error} {len(ms)} (p50 {percentile(ms, 50):.1f}, p99 {percentile(ms, 99):.1f} ms)"
            for error, ms in sorted(self.refusals_by_error.items())
        )

    def as_dict(self) -> dict[str, Any]:
        cdf = [[q / 2, round(self.p(q / 2), 3)] for q in range(1, 201)]
        cdf.insert(-1, [99.9, round(self.p(99.9), 3)])
        refusals = self.refusal_latencies_ms
        return {
            "offered_rps": self.rate,
            "seconds": self.seconds,
            "sent": self.sent,
            "ok": self.ok,
            "achieved_rps": round(self.achieved_rps, 2),
            "error_ratio": self.error_ratio,
            "statuses": dict(self.statuses),
            **{f"p{q}_ms": round(self.p(q), 3) for q in (50, 90, 95, 99, 99.9, 100)},
            "refusals_p99_ms": round(percentile(refusals, 99), 3) if refusals else None,
            "refusals_by_error": {
                error: {
                    "count": len(ms),
                    "p50_ms": percentile(ms, 50),
                    "p99_ms": percentile(ms, 99),
                }
                for error, ms in sorted(self.refusals_by_error.items())
            },
            "send_lag_p99_ms": round(self.send_lag_p99_ms, 3),
            "latency_percentiles_ms": cdf,
            "cpu": self.cpu.as_dict() if self.cpu else None,
            "stages": self.stages,
        }


def write_targets(base_url: str, requests: list[Request], path: Path) -> None:
    """One vegeta target per request, in order."""
    with path.open("w", encoding="utf-8") as out:
        for request in requests:
            header = {"Authorization": [f"Bearer {request.api_key}"]}
            if request.idempotency_key is not None:
                header["Idempotency-Key"] = [request.idempotency_key]
            url = f"{base_url}/memes?{urlencode(request.params, quote_via=quote)}"
            out.write(vegeta_tool.target_line(url, header))


def measured_open_loop(
    base_url: str,
    requests: list[Request],
    rate: float,
    seconds: float,
    timeout_s: float,
    pids: dict[str, int | None],
) -> OpenLoopResult:
    """Offer ``rate``/s for ``seconds`` from ``requests`` (in order), with the CPU of
    every process in ``pids`` and of vegeta itself."""
    count = round(rate * seconds)
    if len(requests) < count:
        raise ValueError(f"{len(requests)} requests planned, {count} needed")
    binary = vegeta_binary()
    with tempfile.TemporaryDirectory(prefix="vegeta-") as scratch:
        root = Path(scratch)
        targets, results, log = root / "targets.jsonl", root / "results.bin", root / "vegeta.log"
        write_targets(base_url, requests[:count], targets)
        attack = vegeta_tool.start(
            vegeta_tool.attack_command(binary, targets, results, rate, seconds, timeout_s), log
        )
        meter = CpuMeter({**pids, "vegeta": attack.pid})
        meter.start()
        cpu = vegeta_tool.wait(attack, log, meter.stop)  # vegeta's own CPU included
        result = summarise(
            vegeta_tool.read_results(binary, results, root / "results.jsonl"), rate, seconds
        )
    result.cpu = cpu
    return result


def summarise(results: list[dict[str, Any]], rate: float, seconds: float) -> OpenLoopResult:
    """One run's figures from vegeta's JSON results."""
    results = vegeta_tool.sent(results)
    sent_s = [datetime.fromisoformat(r["timestamp"]).timestamp() for r in results]
    scheduled_starts = (s - int(r["seq"]) / rate for s, r in zip(sent_s, results, strict=True))
    began_s = min(scheduled_starts, default=0.0)
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    lags: list[float] = []
    refusals_by_error: dict[str, list[float]] = {}
    timeline: list[tuple[float, float, int]] = []
    done_at: dict[str, float] = {}
    ok_span = [float("inf"), 0.0]  # completion time of the first and the last 2xx
    for sent, r in zip(sent_s, results, strict=True):
        lag_ms = (sent - began_s - int(r["seq"]) / rate) * 1000
        latency_ms = lag_ms + r["latency"] / 1e6
        done = sent + r["latency"] / 1e9
        code = int(r["code"])
        status = str(code) if code else ("timeout" if "timeout" in r["error"] else "error")
        statuses[status] += 1
        lags.append(lag_ms)
        latencies.append(latency_ms)
        timeline.append((int(r["seq"]) / rate, latency_ms, code))
        if code in (429, 503):
            refusals_by_error.setdefault(_problem_error(r), []).append(latency_ms)
        if 200 <= code < 300:
            ok_span[0], ok_span[1] = min(ok_span[0], done), max(ok_span[1], done)
            body = json.loads(base64.b64decode(r["body"])) if r.get("body") else {}
            if "request_id" in body:
                # The first answer: a retry with the same Idempotency-Key, answered later
                # from the API's settled answers, is not the request's own latency.
                rid = body["request_id"]
                done_at[rid] = min(done, done_at.get(rid, done))
    return OpenLoopResult(
        rate=rate,
        seconds=seconds,
        sent=len(results),
        latencies_ms=sorted(latencies),
        statuses=statuses,
        send_lag_p99_ms=percentile(sorted(lags), 99) if lags else 0.0,
        completed_in_s=max(0.0, ok_span[1] - ok_span[0]),
        done_at=done_at,
        refusals_by_error={error: sorted(ms) for error, ms in refusals_by_error.items()},
        timeline=sorted(timeline),
    )


def _problem_error(result: dict[str, Any]) -> str:
    """The ``error`` code of a problem body (every API error has one), else "?"."""
    try:
        body = json.loads(base64.b64decode(result.get("body") or ""))
    except ValueError:
        return "?"
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else "?"
