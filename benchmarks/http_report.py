"""Output of ``http_bench.py`` shared by its parts: the shared-machine warning, ratios
and the plot ``docs/img/http-latency.png`` (open-loop CDF, wrk percentiles, ladder, and
CPU per request by component at each ladder step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import CpuReport, say

PERCENTILES = (50, 90, 95, 99)
LOAD_GENERATORS = ("bench", "bare", "vegeta", "wrk")


def component(process: str) -> str:
    """``api-1`` -> ``api``: the processes of one kind are one component."""
    return process.rsplit("-", 1)[0] if process[-1].isdigit() and "-" in process else process


def cpu_ms_per_request(step: dict[str, Any]) -> dict[str, float]:
    """CPU milliseconds per successful request, by component, in one ladder step."""
    out: dict[str, float] = {}
    rate = step["achieved_rps"]
    for process, percent in step["cpu"]["percent_of_one_core"].items():
        if process in LOAD_GENERATORS or rate <= 0:
            continue
        name = component(process)
        out[name] = out.get(name, 0.0) + percent * 10 / rate
    return out


def plot_cpu_per_request(ax: Any, steps: list[dict[str, Any]]) -> None:
    per_step = [cpu_ms_per_request(s) for s in steps]
    names = sorted({name for step in per_step for name in step})
    xs = range(len(steps))
    bottom = [0.0] * len(steps)
    for name in names:
        values = [step.get(name, 0.0) for step in per_step]
        ax.bar(list(xs), values, 0.6, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xticks(list(xs), [f"{s['offered_rps']:g}" for s in steps])
    ax.set_xlabel("offered rate (req/s)")
    ax.set_ylabel("CPU ms per successful request")
    ax.set_title("CPU per request by component (ladder)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)


def warn_if_shared(report: CpuReport) -> None:
    if report.others_percent_of_machine > 10:
        print(
            f"    WARNING: {report.others_percent_of_machine:.0f}% of the machine went to "
            "processes that are not part of this benchmark, or to the host "
            f"({report.steal_percent_of_machine:.0f}% steal): figures are preliminary"
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
        panels += ["ladder", "cpu"]
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
            ax.axvline(slo["p99_at_rate_ms"], color="red", lw=0.8, ls=":", label="SLO p99")
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
        elif panel == "cpu":
            plot_cpu_per_request(ax, results["ladder"])
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
