"""A process's word that it serves again, for a supervisor rolling a restart through it.

A supervisor (``maas up``) names a file for each child (``MAAS_READY_FILE``, the
``ready_file`` setting) and deletes it before it starts the child; the child touches it
once it serves: an API process once its key table is loaded and its reply partition
positioned, a ledger processor once its first assignment is restored, a generator pool
once it holds partitions, an observer once it runs. A rolling restart
(``maas/rolling.py``) stops the next child only after the last one's file is back, so
that no kind of process has two instances down at once.
"""

from __future__ import annotations

from pathlib import Path


def mark_ready(path: Path | None) -> None:
    """Say this process serves (a no-op without a supervisor that asked)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
