"""Wall-clock time in milliseconds since the epoch, the unit of every ``*_ms`` field.

Only processes read the clock; the domains (``ledger/``, ``memes/``) are handed the time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_ms(moment: datetime) -> int:
    """An aware time in ms since the epoch, rounded down. Integer arithmetic: through a
    float (``timestamp() * 1000``) about one time in a hundred lands a millisecond short
    (``2039-06-11T18:02:29.772Z`` became ``...29.771``)."""
    return (moment - EPOCH) // timedelta(milliseconds=1)
