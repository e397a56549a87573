"""Rendering throughput: memes per second per core, against a bare-Pillow baseline.

Each case runs in this one process and thread for ``--seconds`` after a warm-up, so
renders per CPU-second is renders per second per core. CPU time (``process_time``) is
the headline, not wall time: the machine may be shared, and other processes' load
shows up only in wall time (both are printed, with the load average).

Cases, all 512x512 RGB PNG:

- ``baseline_blank_png``: ``Image.new`` + Pillow's PNG encoder (zlib level 1) on a blank
  image; the floor for "make a PNG of this size with bare Pillow";
- ``baseline_template_png``: copy a cached template background + Pillow's PNG encoder,
  no text: a meme's picture before its caption, encoded the stock way;
- ``standard_new_query``: ``render_meme(kind="standard")`` with a query never seen
  before (template choice, caption layout computed);
- ``standard_repeat_query``: the same few queries at the same places again: served
  from the cache of finished memes (what a popular query or a retry costs);
- ``ai_offline``: ``render_meme(kind="ai")``, offline backend, a new request id each
  time (procedural background per request);
- ``convert_webp`` / ``convert_jpeg``: the Accept-header conversions of a stored PNG.

Run: ``python benchmarks/render_bench.py [--seconds 3] [--json out.json]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from memes import place
from memes.catalog import TEMPLATES
from memes.formats import JPEG, WEBP, convert
from memes.render import IMAGE_SIZE, render_meme

CITIES = [(48.8534, 2.3488), (40.7306, -73.9352), (35.6895, 139.6917), (0.0, -140.0)]
TOPICS = ["pizza", "stonks", "monday", "coffee", "plan", "cat", "deadline", "crypto"]


@dataclass
class Result:
    case: str
    iterations: int
    cpu_s: float
    wall_s: float
    per_core_per_s: float
    wall_per_s: float
    p50_ms: float
    p99_ms: float


def _encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def run_case(name: str, step: Callable[[int], object], seconds: float) -> Result:
    for i in range(5):  # warm-up: imports, font and template caches
        step(-1 - i)
    latencies: list[float] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    i = 0
    next_report = wall0 + 1.0
    while time.perf_counter() - wall0 < seconds:
        started = time.perf_counter()
        step(i)
        latencies.append(time.perf_counter() - started)
        i += 1
        if time.perf_counter() >= next_report:
            print(f"  {name}: {i} done", file=sys.stderr, flush=True)
            next_report += 1.0
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    latencies.sort()
    return Result(
        case=name,
        iterations=i,
        cpu_s=round(cpu, 3),
        wall_s=round(wall, 3),
        per_core_per_s=round(i / cpu, 1),
        wall_per_s=round(i / wall, 1),
        p50_ms=round(statistics.median(latencies) * 1000, 2),
        p99_ms=round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2),
    )


def cases() -> dict[str, Callable[[int], object]]:
    backgrounds = [t.draw() for t in TEMPLATES]  # paints every template once
    stored_png = render_meme("bench", "stonks", *CITIES[0], "standard").png

    def blank(i: int) -> object:
        return _encode(Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (255, 255, 255)))

    def template_png(i: int) -> object:
        return _encode(backgrounds[i % len(backgrounds)].copy())

    def standard_new(i: int) -> object:
        query = f"{TOPICS[i % len(TOPICS)]} number {i} of the benchmark"
        return render_meme(f"r{i}", query, *CITIES[i % len(CITIES)], "standard")

    def standard_repeat(i: int) -> object:
        return render_meme("r", TOPICS[i % 4], *CITIES[i % 2], "standard")

    def ai_offline(i: int) -> object:
        return render_meme(f"ai-{i}", TOPICS[i % len(TOPICS)], *CITIES[i % len(CITIES)], "ai")

    return {
        "baseline_blank_png": blank,
        "baseline_template_png": template_png,
        "standard_new_query": standard_new,
        "standard_repeat_query": standard_repeat,
        "ai_offline": ai_offline,
        "convert_webp": lambda i: convert(stored_png, WEBP),
        "convert_jpeg": lambda i: convert(stored_png, JPEG),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per case")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--smoke", action="store_true", help="a few seconds: does it still run?")
    args = parser.parse_args()
    if args.smoke:
        args.seconds = 0.1

    print(f"loading the place index and painting {len(TEMPLATES)} templates...", file=sys.stderr)
    place.warm_up()
    steps = cases()
    results = []
    for name, step in steps.items():
        print(f"case {name} ({args.seconds:.0f} s)...", file=sys.stderr, flush=True)
        results.append(run_case(name, step, args.seconds))

    baseline = results[0].per_core_per_s
    load = os.getloadavg()
    print(
        f"\nmachine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; "
        f"python {platform.python_version()}, pillow {Image.__version__}"
    )
    print(
        "| case | renders/s per core (CPU) | renders/s (wall) | p50 ms | p99 ms | "
        "vs blank PNG baseline |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        ratio = r.per_core_per_s / baseline
        print(
            f"| {r.case} | {r.per_core_per_s:.0f} | {r.wall_per_s:.0f} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {ratio:.2f}x |"
        )
    if args.json:
        payload = {
            "load_average": load,
            "cores": os.cpu_count(),
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
