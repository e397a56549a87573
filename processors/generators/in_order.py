"""Which offset a pool may store when its jobs finish out of order.

A partition's jobs start in offset order but finish in any order (one meme renders
faster than another). A stored offset says "everything before it is done", so it may
only move past a job once every earlier job of its partition is done too; otherwise a
pool killed after the store would skip work that never had an outcome.
"""

from __future__ import annotations


class InOrder:
    """Per partition, the offsets started and not yet passed, in the order started."""

    def __init__(self) -> None:
        # Insertion-ordered: offsets arrive in increasing order within a partition.
        self._open: dict[int, dict[int, bool]] = {}

    def started(self, partition: int, offset: int) -> None:
        jobs = self._open.setdefault(partition, {})
        if jobs and offset <= next(reversed(jobs)):
            # The consumer went back: the partition was given up and taken again, so it
            # restarts from the last commit. What was open is redone from there.
            jobs.clear()
        jobs[offset] = False

    def done(self, partition: int, offset: int) -> int | None:
        """Mark a job done; the offset to store now (one past the last job of an
        unbroken run of done jobs from the oldest), or None if it does not move."""
        jobs = self._open.get(partition)
        if jobs is None or offset not in jobs:
            return None  # started before the consumer went back: it is redone
        jobs[offset] = True
        passed = None
        while jobs:
            first, finished = next(iter(jobs.items()))
            if not finished:
                break
            del jobs[first]
            passed = first
        return None if passed is None else passed + 1
