"""The watchdog of a processor's main loop: a process stuck where it must not be ends.

Three things are watched, by one daemon thread that looks every second:

- **a guarded call**: librdkafka's ``send_offsets_to_transaction`` can block forever
  when the group coordinator moves (librdkafka #5456, #5511); the ledger processor
  guards every transactional call (``guard``), and a call that outlives its limit ends
  the process. The restart fences and aborts the hung transaction, as after a kill
  (``processors.ledger.processor``, failure scenarios). A call known to be about to
  hang ends the process at once the same way (``end``), and so does a call still running
  after ``LOOK_AFTER_S`` when no broker listens (the guard's ``broker_listens``): alone on
  one broker (``maas up``'s), a call that met the broker's death hung until its limit,
  or failed only once the broker was back, and the restart then waits for the broker
  instead;
- **the loop's polls**: a loop that has not been inside a Kafka poll (``polling``) for
  ``poll_limit_s`` since its first one is wedged (a deadlock, every render thread
  stuck) while librdkafka's own threads keep its session alive. librdkafka makes it
  leave its group after ``max.poll.interval.ms``, so the others of its kind take its
  partitions; but a wedged process never comes back, and alone (one processor, as in
  docker-compose) nobody takes them. So it ends too, with every thread's stack in its
  log, and its supervisor restarts it;
- **the loop's stalls** (``stall_limit_s``, the ledger processor's): a loop neither in a
  poll nor in a guarded call for that long is wedged too, and ends long before the poll
  limit. The poll limit must allow a commit retried through a broker fault (seconds of
  guarded calls in a row); the stall limit need not, since each guarded call is bounded
  by its own limit and counts as the loop's activity. Time in which the watcher itself
  did not run (the process frozen by SIGSTOP, or starved of CPU) is not counted: a
  resumed zombie is left to its fencing, which the pause scenarios test.
"""

from __future__ import annotations

import faulthandler
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

log = logging.getLogger("maas.watchdog")

WATCHDOG_EXIT_CODE = 70
# A guarded call running this long has the watcher ask whether any broker listens (most
# take milliseconds; a commit under load, a few hundred).
LOOK_AFTER_S = 1.0
WATCH_EVERY_S = 1.0
# The watcher woke this much later than it asked: the process did not run meanwhile.
FROZEN_AFTER_S = 3.0


class Watchdog:
    """Ends the process when a guarded call outlives its limit, when the loop has not
    polled for ``poll_limit_s``, or when it has stalled (neither polled nor been in a
    guarded call) for ``stall_limit_s`` (None: not watched). See the module docstring.

    Guarding a call or a poll costs a few assignments, not a timer each.
    """

    def __init__(
        self, poll_limit_s: float | None = None, stall_limit_s: float | None = None
    ) -> None:
        self.limit_s = 0.0
        self.what = ""
        self.deadline: float | None = None
        self.started = 0.0
        self.calls = 0  # guards entered: a look's verdict is for the call it looked at
        self.broker_listens: Callable[[], bool] | None = None
        self.poll_limit_s = poll_limit_s
        # When the last poll ended; inf inside one (never silent); None before the first.
        # One field, so the watcher never sees a poll's end without its time.
        self.polled_at: float | None = None
        self.stall_limit_s = stall_limit_s
        self.active_at = 0.0  # when a guarded call last began or ended, or ``alive`` was said
        self.thawed_at = 0.0  # when the watcher last woke from a time the process did not run
        self.closed = threading.Event()
        threading.Thread(target=self._watch, name="watchdog", daemon=True).start()

    def close(self) -> None:
        """The loop has ended: nothing is watched any more."""
        self.closed.set()

    def end(self, why: str) -> NoReturn:
        """End the process now, as a hung guarded call would at its limit."""
        _exit("%s; exiting so that a restart fences the transaction", why)

    def alive(self) -> None:
        """The loop waits on something bounded elsewhere (the producer's full queue, by
        its message timeout): not a stall."""
        self.active_at = time.monotonic()

    @contextmanager
    def guard(
        self, limit_s: float, what: str, broker_listens: Callable[[], bool] | None = None
    ) -> Iterator[None]:
        """``broker_listens`` (bounded by its own timeout; from the watcher's thread):
        whether any broker listens; when it says no, a call past ``LOOK_AFTER_S`` ends."""
        self.limit_s = limit_s
        self.what = what
        self.broker_listens = broker_listens
        self.calls += 1
        self.started = self.active_at = time.monotonic()
        self.deadline = self.started + limit_s
        try:
            yield
        finally:
            self.active_at = time.monotonic()  # before the deadline goes: never unguarded
            self.deadline = None

    @contextmanager
    def polling(self) -> Iterator[None]:
        """Around a Kafka poll: time in it is not silence (librdkafka counts it alike)."""
        self.polled_at = math.inf
        try:
            yield
        finally:
            self.polled_at = time.monotonic()

    def _watch(self) -> None:
        woke = time.monotonic()
        while not self.closed.wait(WATCH_EVERY_S):
            now = time.monotonic()
            if now - woke > FROZEN_AFTER_S:
                self.thawed_at = now
            woke = now
            deadline = self.deadline
            if deadline is not None and now > deadline:
                _exit(
                    "guarded call hung call=%s limit_s=%.0f; exiting so that a restart fences "
                    "the transaction",
                    self.what,
                    self.limit_s,
                )
            if deadline is not None and now - self.started >= LOOK_AFTER_S:
                self._look()
            limit_s, polled_at = self.poll_limit_s, self.polled_at
            if limit_s is not None and polled_at is not None and now - polled_at > limit_s:
                _exit(
                    "main loop has not polled for %.0f s (limit %.0f s): wedged; exiting so "
                    "that a restart takes its partitions back",
                    now - polled_at,
                    limit_s,
                )
            if deadline is None:
                self._check_stall(now)

    def _check_stall(self, now: float) -> None:
        limit_s, polled_at = self.stall_limit_s, self.polled_at
        if limit_s is None or polled_at is None:
            return
        quiet_s = now - max(polled_at, self.active_at, self.thawed_at)
        if quiet_s > limit_s:
            _exit(
                "main loop stalled for %.0f s, neither polling nor in a guarded call (limit "
                "%.0f s): wedged; exiting so that a restart takes its partitions back",
                quiet_s,
                limit_s,
            )

    def _look(self) -> None:
        call, what, broker_listens = self.calls, self.what, self.broker_listens
        if broker_listens is None or broker_listens():
            return
        if self.deadline is not None and self.calls == call:  # the call it looked at
            _exit(
                "guarded call met a broker outage call=%s: no broker listens; exiting so "
                "that a restart fences the transaction once one does",
                what,
            )


def _exit(message: str, *args: object) -> NoReturn:
    log.critical(message, *args)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    logging.shutdown()
    os._exit(WATCHDOG_EXIT_CODE)
