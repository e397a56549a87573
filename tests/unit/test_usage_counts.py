"""The pure part of the usage analytics: hours, pruning, totals."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.usage.counts import add_request, hour_of, summarize

HOUR_MS = 3_600_000


def test_hour_of_is_the_utc_hour() -> None:
    assert hour_of(0) == "1970-01-01T00"
    assert hour_of(HOUR_MS - 1) == "1970-01-01T00"
    assert hour_of(HOUR_MS) == "1970-01-01T01"
    assert hour_of(1_796_179_999_000) == "2026-12-02T02"


def test_add_request_counts_without_mutating() -> None:
    before = {"2026-12-02T01": 2}
    after = add_request(before, "2026-12-02T01", retention_hours=24)
    assert after == {"2026-12-02T01": 3}
    assert before == {"2026-12-02T01": 2}  # a faust table writes only what is assigned


def test_add_request_keeps_the_newest_hours() -> None:
    hours = {"2026-12-02T00": 5, "2026-12-02T01": 1}
    assert add_request(hours, "2026-12-02T02", retention_hours=2) == {
        "2026-12-02T01": 1,
        "2026-12-02T02": 1,
    }
    # A late event for an hour already pruned does not bring it back.
    assert add_request({"2026-12-02T01": 1, "2026-12-02T02": 1}, "2026-12-01T23", 2) == {
        "2026-12-02T01": 1,
        "2026-12-02T02": 1,
    }


@settings(deadline=None)  # a loaded machine is not a failure
@given(st.lists(st.integers(min_value=0, max_value=200 * HOUR_MS), max_size=200))
def test_counts_add_up_within_retention(times_ms: list[int]) -> None:
    hours: dict[str, int] = {}
    for ms in sorted(times_ms):
        hours = add_request(hours, hour_of(ms), retention_hours=48)
    assert len(hours) <= 48
    newest = sorted({hour_of(ms) for ms in times_ms})[-48:]
    assert sorted(hours) == newest
    assert sum(hours.values()) == sum(1 for ms in times_ms if hour_of(ms) in hours)


def test_summarize_totals_and_busiest_first() -> None:
    summary = summarize(
        [
            ("a", {"2026-12-02T01": 1, "2026-12-02T02": 2}),
            ("b", {"2026-12-02T02": 7}),
            ("c", {}),
        ],
        top=2,
    )
    assert summary == {
        "hours": {"2026-12-02T01": 1, "2026-12-02T02": 9},
        "requests": 10,
        "clients": 3,
        "top_clients": [{"client_id": "b", "requests": 7}, {"client_id": "a", "requests": 3}],
    }
