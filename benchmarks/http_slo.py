"""The SLOs of ``slo.toml``, checked on an open-loop run of ``http_bench.py``.

``check_slo`` gives a PASS/FAIL line per SLO for the SLO run (p99 within
``p99_at_rate_ms``); ``step_passes`` says whether a ladder step met the capacity's p99
(``p99_ms``), the error ratio and the achieved rate of its own offered rate (a step is
not held to the SLO's rate); ``check_overload`` checks the ``[overload]``
objectives on an overload run and the run at capacity that follows it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from common import percentile
from http_open_loop import OpenLoopResult


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
            result.p(99) <= slo["p99_at_rate_ms"],
            f"{result.p(99):.1f} ms (need <= {slo['p99_at_rate_ms']} ms)",
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


def recovery_s(after: OpenLoopResult, p99_ms: float, window_s: float = 1.0) -> float:
    """Seconds after an overload until latency is back: the end of the last window (by
    scheduled instant) of the run that follows it whose p99 is over ``p99_ms`` or that
    had an error; 0 if there is none."""
    windows: dict[int, list[tuple[float, int]]] = {}
    for at_s, latency_ms, code in after.timeline:
        windows.setdefault(int(at_s // window_s), []).append((latency_ms, code))
    late = [
        index
        for index, answers in windows.items()
        if percentile(sorted(ms for ms, _ in answers), 99) > p99_ms
        or any(not 200 <= code < 300 for _, code in answers)
    ]
    return (max(late) + 1) * window_s if late else 0.0


def check_overload(
    over: OpenLoopResult, after: OpenLoopResult, capacity_rps: float, slo: dict[str, Any]
) -> list[tuple[str, bool, str]]:
    """``slo.toml``'s ``[overload]`` objectives on an overload run and the run after it."""
    objectives = slo["overload"]
    goodput = over.ok / over.seconds
    need = capacity_rps * objectives["goodput_ratio_min"]
    # The excess is every answer that was not a success: it passes only if all of it was
    # refused (429/503), fast. A 502 or 504 is excess that was not refused.
    turned_away = sorted(ms for _, ms, code in over.timeline if not 200 <= code < 300)
    refused = len(over.refusal_latencies_ms)
    others = len(turned_away) - refused
    turned_away_p99 = percentile(turned_away, 99) if turned_away else 0.0
    back_s = recovery_s(after, slo["p99_ms"])
    return [
        (
            "goodput",
            goodput >= need,
            f"{goodput:.1f} ok/s while {over.rate:g}/s were offered (need >= {need:g}: "
            f"{objectives['goodput_ratio_min']:.0%} of a capacity of {capacity_rps:g}/s)",
        ),
        (
            "refusal",
            others == 0 and turned_away_p99 <= objectives["refusal_p99_ms"],
            f"{len(turned_away)} not served: {refused} refused (429/503), {others} other "
            f"errors; p99 {turned_away_p99:.1f} ms (need all refused, p99 <= "
            f"{objectives['refusal_p99_ms']} ms)",
        ),
        (
            "recovery",
            back_s <= objectives["recovery_s_max"],
            f"p99 back under {slo['p99_ms']} ms, without errors, {back_s:g} s after the "
            f"overload (need <= {objectives['recovery_s_max']} s)",
        ),
    ]
