"""The CPU meter of the benchmarks and the fault runs (``benchmarks/common.py``): what
it counts for a process agrees with the kernel's own account of that process, also for a
process killed and started again under its name."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from common import CLK_TCK, CpuMeter

SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass"


def spin(cpu_s: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", SPIN.format(s=cpu_s)])


def exit_then_reap(child: subprocess.Popen[bytes], meter: CpuMeter) -> float:
    """Wait for the child's exit without reaping it, sample (its ticks are still in
    ``/proc``), then reap it; return the CPU seconds the kernel accounted to it."""
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    meter.sample()
    _, _, usage = os.wait4(child.pid, 0)
    child.returncode = 0  # reaped here, not by Popen
    return usage.ru_utime + usage.ru_stime


def test_a_process_counts_what_the_kernel_accounted_to_it() -> None:
    child = spin(0.3)
    meter = CpuMeter({"child": child.pid}, every_s=0.05)
    meter.start()
    used_s = exit_then_reap(child, meter)
    report = meter.stop()

    measured_s = report.percent["child"] / 100 * report.seconds
    # Counted from the meter's start (the child's start-up before it is not), in whole
    # ticks (utime and stime each rounded down).
    assert used_s - 0.1 <= measured_s <= used_s + 2 / CLK_TCK, (measured_s, used_s)
    assert measured_s >= 0.25


def test_a_process_started_again_under_its_name_counts_both_lives() -> None:
    running: dict[str, int | None] = {"worker": None}
    meter = CpuMeter(lambda: running, every_s=0.05)
    meter.start()
    used_s = 0.0
    for _ in range(2):
        child = spin(0.2)
        running["worker"] = child.pid
        used_s += exit_then_reap(child, meter)
        running["worker"] = None
    report = meter.stop()

    measured_s = report.percent["worker"] / 100 * report.seconds
    # Born after the start, each life counts from its birth: all the kernel accounted to
    # it, in whole ticks (utime and stime each rounded down).
    assert abs(measured_s - used_s) <= 4 / CLK_TCK, (measured_s, used_s)


GROW = (
    "import sys, time\nsys.stdin.readline()\nheld = []\nfor _ in range(8):\n"
    "    held.append(bytearray(8 << 20)); held[-1][::4096] = b'x' * len(held[-1][::4096])\n"
    "    time.sleep(0.05)\nsys.stdin.read()"
)


def test_memory_is_the_first_and_the_last_sample_of_a_process() -> None:
    """A process that takes 64 MiB once it is measured: its first sample holds little,
    its last the 64 MiB more (written to, so resident)."""
    child = subprocess.Popen([sys.executable, "-c", GROW], stdin=subprocess.PIPE)
    assert child.stdin is not None
    try:
        meter = CpuMeter({"child": child.pid}, every_s=0.05)
        meter.start()
        child.stdin.write(b"go\n")
        child.stdin.flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            meter.sample()
            first, last = meter.so_far().rss_mb["child"]
            if last - first >= 60:
                break
            time.sleep(0.05)
        report = meter.stop()
    finally:
        child.communicate(b"")
    first, last = report.rss_mb["child"]
    assert first < 40 and last - first >= 60, report.rss_mb
    assert "child=" in report.memory_line()
