"""Fault-injection points on the commit protocol's boundaries, for tests and drills.

``MAAS_FAULT_POINT=<point>[+refund]:<KILL|STOP>`` makes the processor send itself the
signal the first time it reaches ``point``; with ``+refund`` only in a transaction that
refunds expired deadlines (timer-driven work). Unset, the default, nothing fires.

The points, in the order a transaction reaches them (steps of the commit protocol in
``processors.ledger.processor``):

- ``after_produce``: the batch's outputs are produced; no offsets sent yet;
- ``after_offsets``: offsets sent with the group metadata; commit not called yet;
- ``after_commit``: ``commit_transaction`` returned; RocksDB not written yet.

``KILL`` is a crash at that boundary; ``STOP`` freezes the process there (SIGSTOP) until
a test resumes it (SIGCONT): a zombie paused inside its transaction.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Literal

Point = Literal["after_produce", "after_offsets", "after_commit"]


@dataclass
class FaultPoint:
    point: Point
    refunds_only: bool
    signal: signal.Signals
    fired: bool = False

    @classmethod
    def parse(cls, spec: str) -> FaultPoint | None:
        """``None`` for the empty spec; ``Settings.fault_point`` has checked its format."""
        if not spec:
            return None
        where, sig = spec.split(":")
        point, _, refund = where.partition("+")
        return cls(point, refund == "refund", signal.Signals[f"SIG{sig}"])  # type: ignore[arg-type]

    def reached(self, point: Point, *, refunds: bool) -> None:
        if self.fired or point != self.point or (self.refunds_only and not refunds):
            return
        self.fired = True
        os.kill(os.getpid(), self.signal)
