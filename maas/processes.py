"""How each process of the service is started and stopped: the one place that knows.

``maas up`` (``maas.supervisor``), the tests' stacks and ledger drivers and the
benchmarks' regions all start processes through ``start_process``, so a process that
gains an argument or changes its command line changes here only. Each child runs the
``maas`` command line with this interpreter, takes its settings from ``env`` and appends
its output (stdout and stderr) to its own log file.

A child of ``maas up`` ends with it (``end_with_supervisor``): each child is a session of
its own, so nothing else would stop it when the supervisor is killed (``kill -9``, the
OOM killer); the children were left running, unsupervised, an API among them still
answering on the port, and the next ``maas up`` started a second set beside them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# The money path and what serves it (several of each may run, each with its own
# instance id); then what only observes it (one each).
SERVICE = ("processor", "generator-standard", "generator-ai", "api")
OBSERVERS = ("usage", "checkpointer", "sweeper")
PROCESSES = SERVICE + OBSERVERS
# How many of each kind of SERVICE ``maas up`` runs unless told otherwise. Two ledger
# processors: while one restarts after a crash, the other keeps deciding its own
# partitions, and a stopped (hung) one's partitions move to the other after the session
# timeout. Two standard generator pools for the same reason: every standard meme goes
# through them, and one alone stalls them all for the seconds a restart takes. Two API
# processes on the port: each holds its own in-flight limit, so together they ride out
# such a stall, and one serves while the other restarts (docs/reliability.md). Two AI
# pools: an AI meme costs the most CPU (~7 ms), and one pool was the first part to
# saturate, at ~250/s, failing its excess with 502 after its wait bound; with two the
# same machine served 300/s within the SLO, and under overload most of the excess was
# refused by the APIs (503) instead (docs/capacity.md).
DEFAULT_COUNTS: Mapping[str, int] = {
    "processor": 2,
    "generator-standard": 2,
    "generator-ai": 2,
    "api": 2,
}


# How long a process has to exit after SIGKILL: the kernel ends it, nothing of it runs.
KILLED_EXIT_S = 30.0

# Set by ``maas up`` in its children's environment: its own pid.
SUPERVISOR_PID_VARIABLE = "MAAS_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


# Kinds whose supervisor watches their heartbeat (core/heartbeat.py): the API processes,
# which share a port, so one stopped would keep its share of the connections unanswered.
# A stopped processor or generator pool loses its partitions to the others when its
# Kafka session times out, and is fenced when it resumes: Kafka watches those. A wedged
# one (its loop blocked, librdkafka's threads alive) ends itself (processors/watchdog.py).
WATCHED = ("api",)


def process_label(name: str, instance_id: str | None = None) -> str:
    """What a process is called in logs and reports: ``api``, ``api-1``, ``processor-0``."""
    return name if instance_id is None else f"{name}-{instance_id}"


def process_command(
    name: str, host: str = "127.0.0.1", port: int = 8000, instance_id: str | None = None
) -> list[str]:
    """The command line of one process of the service, as ``maas up`` runs it.

    ``instance_id`` names one instance of a kind of which several may run: a ledger
    processor (its stable transactional id) or a generator pool (its static group
    membership); without it the settings' default applies. An API instance takes its
    id from the environment instead (``process_env``)."""
    maas = [sys.executable, "-m", "maas.cli"]
    instance = ["--instance-id", instance_id] if instance_id is not None else []
    match name:
        case "processor":
            return [*maas, "processor", *instance]
        case "generator-standard":
            return [*maas, "generator", "--kind", "standard", *instance]
        case "generator-ai":
            return [*maas, "generator", "--kind", "ai", *instance]
        case "api":
            return [*maas, "api", "--host", host, "--port", str(port)]
        case "usage":
            return [*maas, "usage", "--host", host]
        case "checkpointer":
            return [*maas, "audit", "checkpoint", "--loop"]
        case "sweeper":
            return [*maas, "blobs", "sweep", "--loop"]
    raise KeyError(name)


def heartbeat_file(data_dir: Path, name: str, instance_id: str | None = None) -> Path | None:
    """The file a process of a WATCHED kind touches as its heartbeat; None for the others."""
    if name not in WATCHED:
        return None
    return data_dir / "heartbeats" / process_label(name, instance_id)


def ready_file(data_dir: Path, name: str, instance_id: str | None = None) -> Path:
    """The file a process touches once it serves (``core/readiness.py``)."""
    return data_dir / "ready" / process_label(name, instance_id)


def process_env(
    name: str,
    env: dict[str, str],
    instance_id: str | None = None,
    heartbeat: Path | None = None,
    ready: Path | None = None,
) -> dict[str, str]:
    """The environment of one process: ``env``, for an API instance its
    ``MAAS_API_INSTANCE`` (the partition of the replies topic it reads), and the
    heartbeat file its supervisor watches and the file it touches once it serves, if
    its supervisor asks for them."""
    extra = {}
    if name == "api" and instance_id is not None:
        extra["MAAS_API_INSTANCE"] = instance_id
    if heartbeat is not None:
        extra["MAAS_HEARTBEAT_FILE"] = str(heartbeat)
    if ready is not None:
        extra["MAAS_READY_FILE"] = str(ready)
    return {**env, **extra}


def start_process(
    name: str,
    env: dict[str, str],
    log_path: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    instance_id: str | None = None,
    heartbeat: Path | None = None,
    ready: Path | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start one process of the service, its output appended to ``log_path``.

    Each process is a session of its own, so a scheduling group of its own where the
    kernel groups by session (autogroup): a saturated machine's CPU is then shared
    between processes, not threads, and the AI pools' many threads no longer crowd out
    the APIs' event loops (docs/architecture.md, "Decision: each process a scheduling
    group of its own"). The terminal's Ctrl-C then reaches only the supervisor, which
    stops its children itself, in order. ``heartbeat``: the file the process is to touch
    as its heartbeat (``heartbeat_file``), for a supervisor that watches it; ``ready``:
    the one it is to touch once it serves (``ready_file``), for a rolling restart."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:  # the child holds its own descriptor
        return subprocess.Popen(
            process_command(name, host, port, instance_id),
            env=process_env(name, env, instance_id, heartbeat, ready),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )


def end_with_supervisor() -> None:
    """In a child of ``maas up``: have Linux send this process SIGTERM when its parent
    ends (``PR_SET_PDEATHSIG``), which stops it as ``maas up``'s own stop does. A no-op
    for a process no supervisor started, and where there is no ``prctl`` (not Linux).

    The signal follows the parent *thread* that started the child: ``maas up`` starts
    every child from its main thread, which lives as long as it does.
    """
    supervisor = os.environ.pop(SUPERVISOR_PID_VARIABLE, "")  # not for what this one starts
    if not supervisor.isdigit() or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(supervisor):  # it ended before the request above was made
        os.kill(os.getpid(), signal.SIGTERM)


def reap(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """The exit code of a process told to stop (SIGTERM, a graceful stop), once it has
    exited; killed (SIGKILL) if it has not within ``timeout_s``."""
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(KILLED_EXIT_S)


def stop_together(procs: Sequence[subprocess.Popen[bytes]], timeout_s: float) -> list[int]:
    """Their exit codes, in order, once all have stopped gracefully: SIGTERM to each
    still running first, then each reaped, so their graceful stops overlap (one after
    another took ~0.5 s each)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    return [reap(proc, timeout_s) for proc in procs]
