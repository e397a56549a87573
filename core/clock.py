"""Wall-clock time in milliseconds since the epoch, the unit of every ``*_ms`` field.

Only processes read the clock; the domains (``ledger/``, ``memes/``) are handed the time.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
