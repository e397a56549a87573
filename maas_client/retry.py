"""When to try again: exponential backoff with full jitter, ``Retry-After`` and a budget.

Pure: the caller hands in the attempt count, the time spent and the random source, so
the same numbers give the same answer in tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` counts the first try; no retry starts once ``budget_s`` seconds
    have passed since it (the attempt itself may then take up to the request timeout)."""

    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 10.0
    budget_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be 1 or more")
        if not 0 <= self.base_delay_s <= self.max_delay_s:
            raise ValueError("need 0 <= base_delay_s <= max_delay_s")
        if self.budget_s < 0:
            raise ValueError("budget_s must not be negative")

    def delay_s(
        self,
        failed_attempts: int,
        elapsed_s: float,
        retry_after_s: float | None,
        rng: random.Random,
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up.

        Full jitter: a uniform draw up to ``base * 2^(n-1)`` (at most ``max_delay_s``),
        so that clients failing together do not come back together. A ``Retry-After``
        is a floor the jitter is added to: clients told the same instant would
        otherwise all return in it.
        """
        if failed_attempts >= self.max_attempts:
            return None
        ceiling_s = min(self.max_delay_s, self.base_delay_s * 2 ** (failed_attempts - 1))
        delay_s = rng.uniform(0, ceiling_s) + (retry_after_s or 0.0)
        if elapsed_s + delay_s > self.budget_s:
            return None
        return delay_s


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110: delay-seconds or an
    HTTP-date); None if absent or unreadable. ``now_s`` is Unix time, for the date form."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # "-0000": an HTTP-date is always in GMT
    return max(0.0, when.timestamp() - now_s)
