"""vegeta, the compiled open-loop load generator: where it is, and how it is driven.

``scripts/bootstrap.sh`` installs it into ``.maas/bin`` with ``go install``, the same
module and version as ``install`` here. Two loads drive it, the benchmarks'
(``benchmarks/http_open_loop.py``) and the Jepsen availability run's
(``tests/jepsen/vegeta.py``); both write their targets, start the attack and read its
results through this module, so vegeta's formats and flags are written once.

This module imports nothing of the benchmarks' own, so that it is the same module
whether a benchmark script imports it (``benchmarks/`` on the path) or the tests do
(``benchmarks.vegeta_tool``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

MODULE = "github.com/tsenart/vegeta/v12"
VERSION = "v12.13.0"  # scripts/bootstrap.sh installs the same
BINARY = Path(__file__).resolve().parents[1] / ".maas" / "bin" / "vegeta"
_NO_TARGETS = "no targets to attack"  # vegeta's result for a tick after the last target
INSTALL_TIMEOUT_S = 600
T = TypeVar("T")


def installed() -> Path | None:
    """``.maas/bin/vegeta`` if it is there."""
    return BINARY if os.access(BINARY, os.X_OK) else None


def install() -> Path:
    """``go install`` vegeta into ``.maas/bin``, as ``scripts/bootstrap.sh`` does.
    RuntimeError if go is missing or the install fails."""
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("go is not on PATH, so vegeta cannot be installed")
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [go, "install", f"{MODULE}@{VERSION}"],
        env={**os.environ, "GOBIN": str(BINARY.parent)},
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0 or installed() is None:
        raise RuntimeError(f"go install of vegeta failed: {done.stderr.strip()[-500:]}")
    return BINARY


def target_line(url: str, header: dict[str, list[str]]) -> str:
    """One GET target in vegeta's JSON format. It ends in a newline, as every line
    must: vegeta's lazy reader drops a last line without one."""
    target = {"method": "GET", "url": url, "header": header}
    return json.dumps(target, separators=(",", ":")) + "\n"


def max_workers(rate: float, timeout_s: float) -> int:
    """Enough for every request of a timeout window to be in flight at once: open loop."""
    return int(rate * timeout_s) + 100


def attack_command(
    binary: Path, targets: Path, results: Path, rate: float, seconds: float, timeout_s: float
) -> list[str]:
    """``vegeta attack`` of the targets, in order, at ``rate``/s for ``seconds``."""
    fraction = Fraction(rate).limit_denominator(1000)  # vegeta takes "<int>/<duration>"
    return [
        str(binary),
        "attack",
        "-format=json",
        "-lazy",
        f"-targets={targets}",
        f"-rate={fraction.numerator}/{fraction.denominator}s",
        f"-duration={seconds:g}s",
        f"-timeout={timeout_s:g}s",
        f"-max-workers={max_workers(rate, timeout_s)}",
        f"-output={results}",
    ]


def start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """The attack as a child process writing to ``log``, in a scheduling group of its
    own, like each process of the service (``maas.processes``): the clients it stands
    for are elsewhere, so it shares no group's CPU with the service."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait(attack: subprocess.Popen[bytes], log: Path, before_reaping: Callable[[], T]) -> T:
    """Until the attack exits; what ``before_reaping`` returns. It runs while the attack
    is a zombie, whose CPU times ``/proc`` still has. RuntimeError, with the log's tail,
    if the attack failed."""
    os.waitid(os.P_PID, attack.pid, os.WEXITED | os.WNOWAIT)
    seen = before_reaping()
    code = attack.wait()
    if code != 0:
        tail = log.read_text(errors="replace")[-1000:]
        raise RuntimeError(f"vegeta attack exited with {code}: {tail}")
    return seen


def read_results(binary: Path, results: Path, encoded: Path) -> list[dict[str, Any]]:
    """Every result of an attack, decoded into ``encoded`` (JSON lines) and parsed."""
    subprocess.run(
        [str(binary), "encode", "--to", "json", f"--output={encoded}", str(results)],
        check=True,
    )
    with encoded.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def sent(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results of requests sent: without the ticks after the last target, which a
    ``-lazy`` attack records as errors."""
    return [r for r in results if r["url"] or r["error"] != _NO_TARGETS]
