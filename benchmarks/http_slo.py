"""The SLOs of ``slo.toml``, checked on an open-loop run of ``http_bench.py``.

``check_slo`` gives a PASS/FAIL line per SLO for the SLO run; ``step_passes`` says
whether a ladder step met p99, the error ratio and the achieved rate of its own offered
rate (a step is not held to the SLO's rate).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

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
