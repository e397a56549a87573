"""The closed-loop part of ``http_bench.py``: ``wrk`` with ``memes.lua``, and its output.

Finds (or installs) wrk, runs it with the CPU of every process measured around it (wrk's
own from this process's children), echoes wrk's summary lines and parses the
``WRK_JSON`` line that ``memes.lua`` prints in ``done()``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any

from common import REPO, CpuMeter, say
from http_report import warn_if_shared

MEMES_LUA = REPO / "benchmarks" / "memes.lua"


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
        str(MEMES_LUA),
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
