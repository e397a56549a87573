"""The open-loop load generator of ``http_bench.py`` and its latency bookkeeping.

``open_loop`` sends ``GET /memes`` at a constant rate, each request at its scheduled
instant whether or not earlier ones have been answered, and measures latency from that
instant, so a stalled server cannot hide its queue (no coordinated omission).
``OpenLoopResult`` holds what one run saw (latencies, statuses, send lag, the receive time
of every answered request for the stage breakdown) and prints and serialises it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
from common import CpuMeter, CpuReport, percentile

QUERIES = ["food", "cats", "dogs", "monday", "coffee", "kafka", "rain", "pizza", "deadline"]
SEND_LAG_WARN_MS = 20


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

        async def one(
            i: int, scheduled: float, params: dict[str, str], headers: dict[str, str]
        ) -> None:
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
