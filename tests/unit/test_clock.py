"""``core.clock.to_ms``: every millisecond of a time survives the conversion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from core.clock import EPOCH, to_ms

LAST_MS = to_ms(datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC))


@given(st.integers(min_value=0, max_value=LAST_MS))
def test_a_whole_millisecond_converts_exactly(ms: int) -> None:
    assert to_ms(EPOCH + timedelta(milliseconds=ms)) == ms


def test_a_time_through_a_float_was_one_millisecond_short() -> None:
    moment = datetime(2039, 6, 11, 18, 2, 29, 772_000, tzinfo=UTC)
    assert int(moment.timestamp() * 1000) == 2191428149771  # the float way
    assert to_ms(moment) == 2191428149772


def test_microseconds_round_down_and_zones_count() -> None:
    assert to_ms(datetime(1970, 1, 1, 0, 0, 0, 1_999, tzinfo=UTC)) == 1
    assert to_ms(datetime(1970, 1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=1)))) == 0
