"""A process's word that it serves, and a replacement's wait for the process it replaces.

A supervisor (``maas up``) names a file for each child (``MAAS_READY_FILE``, the
``ready_file`` setting) and deletes it before it starts the child; the child touches it
once it serves: an API process once it listens with its key table loaded and its reply
partition positioned, a ledger processor once its first assignment is restored, a
generator pool once its loads are done and it holds partitions, an observer once it
runs. A rolling restart (``maas/rolling.py``) moves on to the next child only once the
last one's file is back.

A rolling restart starts each replacement while its predecessor still serves, naming it
(``MAAS_PREDECESSOR_PID``). The replacement does all it can alone (imports, loads,
clients), says so (``is_warm``), and waits in ``take_over`` until the predecessor has
exited before what the two cannot share: a ledger processor's transactional id and
RocksDB state, a pool's static group membership, the usage worker's tables. The
supervisor stops the predecessor once the replacement is warm, so its partitions wait
only for its stop and the replacement's join, not for a whole start. (API processes
share the port and need no wait: a new one listens beside the old one.)
"""

from __future__ import annotations

import time
from pathlib import Path

TAKE_OVER_POLL_S = 0.02


def mark_ready(path: Path | None) -> None:
    """Say this process serves (a no-op without a supervisor that asked)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def _warm_file(ready: Path) -> Path:
    """Where a replacement says it waits only for its predecessor."""
    return ready.with_name(ready.name + ".warm")


def forget(ready: Path) -> None:
    """Before a start: what the last process said is void."""
    ready.unlink(missing_ok=True)
    _warm_file(ready).unlink(missing_ok=True)


def is_warm(ready: Path) -> bool:
    """Whether the process waits only for its predecessor, or serves already."""
    return ready.exists() or _warm_file(ready).exists()


def take_over(ready: Path | None, predecessor_pid: int | None) -> None:
    """Say this replacement is warm, then wait until its predecessor has exited (a no-op
    for a process that replaces none)."""
    if predecessor_pid is None:
        return
    if ready is not None:
        mark_ready(_warm_file(ready))
    while running(predecessor_pid):
        time.sleep(TAKE_OVER_POLL_S)


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process: an exited one not yet reaped by its parent (a
    zombie) has stopped too."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # "pid (command) state ...": the command may hold spaces and parentheses.
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped before or while it was read
        return False
