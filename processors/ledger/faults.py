"""Fault-injection points on the commit protocol's boundaries, for tests and drills.

``MAAS_FAULT_POINT=<point>[+refund]:<KILL|STOP|WEDGE>`` makes the processor act the first
time it reaches ``point``; with ``+refund`` only in a transaction that refunds expired
deadlines (timer-driven work). Unset, the default, nothing fires.

The points, in the order a transaction reaches them (steps of the commit protocol in
``processors.ledger.processor``):

- ``after_produce``: the batch's outputs are produced; no offsets sent yet;
- ``after_offsets``: offsets sent with the group metadata; commit not called yet;
- ``after_commit``: ``commit_transaction`` returned; RocksDB not written yet.

``KILL`` is a crash at that boundary; ``STOP`` freezes the process there (SIGSTOP) until
a test resumes it (SIGCONT): a zombie paused inside its transaction. ``WEDGE`` blocks the
main thread there for good while librdkafka's threads run on and keep its Kafka session
alive: a deadlocked loop, which its watchdog ends after ``max_poll_interval_ms``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger("maas.ledger")

Point = Literal["after_produce", "after_offsets", "after_commit"]
Action = Literal["KILL", "STOP", "WEDGE"]


@dataclass
class FaultPoint:
    point: Point
    refunds_only: bool
    action: Action
    fired: bool = False

    @classmethod
    def parse(cls, spec: str) -> FaultPoint | None:
        """``None`` for the empty spec; ``Settings.fault_point`` has checked its format."""
        if not spec:
            return None
        where, action = spec.split(":")
        point, _, refund = where.partition("+")
        return cls(point, refund == "refund", action)  # type: ignore[arg-type]

    def reached(self, point: Point, *, refunds: bool) -> None:
        if self.fired or point != self.point or (self.refunds_only and not refunds):
            return
        self.fired = True
        if self.action == "WEDGE":
            log.critical("fault point %s: the main thread wedges here for good", point)
            threading.Event().wait()  # never set
        else:
            os.kill(os.getpid(), signal.Signals[f"SIG{self.action}"])
