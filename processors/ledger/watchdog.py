"""The watchdog of the ledger processor's transactional calls.

librdkafka's ``send_offsets_to_transaction`` can block forever when the group
coordinator moves (librdkafka #5456, #5511); the processor guards every transactional
call, and the watchdog ends the process if one outlives its limit. The restart fences
and aborts the hung transaction, as after a kill (``processors.ledger.processor``,
failure scenarios).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("maas.ledger")

WATCHDOG_EXIT_CODE = 70


class Watchdog:
    """Ends the process when a guarded call outlives its limit (see the module docstring).

    One daemon thread checks a single deadline, so guarding a call costs two
    assignments, not a timer per call.
    """

    def __init__(self) -> None:
        self.limit_s = 0.0
        self.what = ""
        self.deadline: float | None = None
        threading.Thread(target=self._watch, name="txn-watchdog", daemon=True).start()

    @contextmanager
    def guard(self, limit_s: float, what: str) -> Iterator[None]:
        self.limit_s = limit_s
        self.what = what
        self.deadline = time.monotonic() + limit_s
        try:
            yield
        finally:
            self.deadline = None

    def _watch(self) -> None:
        while True:
            time.sleep(1.0)
            deadline = self.deadline
            if deadline is not None and time.monotonic() > deadline:
                log.critical(
                    "transactional call hung call=%s limit_s=%.0f; exiting so that a restart "
                    "fences the transaction",
                    self.what,
                    self.limit_s,
                )
                logging.shutdown()
                os._exit(WATCHDOG_EXIT_CODE)
