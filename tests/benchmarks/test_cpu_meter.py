"""The CPU meter of the benchmarks and the fault runs (``benchmarks/common.py``): what
it counts for a process agrees with the kernel's own account of that process, also for a
process killed and started again under its name."""

from __future__ import annotations

import os
import subprocess
import sys
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
