"""The parts of ``http_bench.py`` that need no service: the workload, the open-loop
bookkeeping and the overload checks.

``benchmarks/`` holds scripts that import their siblings by name, so the folder is put
on the path here as the scripts put it there by being run.
"""

from __future__ import annotations

import base64
import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from http_open_loop import OpenLoopResult, summarise
from http_slo import check_overload, check_slo, recovery_s, step_passes
from workload import (
    AI_SHARE,
    KEYED_SHARE,
    RETRY_AFTER_S,
    RETRY_SHARE,
    VOCABULARY,
    ai_count,
    cities,
    place_clients,
    plan,
)

pytestmark = pytest.mark.benchmark

KEYS = [f"mk_{n}" for n in range(200)]


def population() -> list:
    return place_clients(KEYS, set(KEYS[: ai_count(len(KEYS))]))


def test_clients_live_where_people_live() -> None:
    clients = population()
    assert sum(c.ai for c in clients) == round(len(KEYS) * AI_SHARE)
    big = {(round(c.lat), round(c.lon)) for c in cities() if c.population >= 5_000_000}
    homes = Counter((round(c.lat), round(c.lon)) for c in clients)
    # 200 clients drawn by population: the megacities hold a good share of them.
    in_megacities = sum(n for home, n in homes.items() if home in big)
    assert in_megacities >= 20, homes.most_common(10)
    assert place_clients(KEYS, set()) == place_clients(KEYS, set())  # seeded


def test_realistic_requests_repeat_places_and_popular_queries() -> None:
    requests = plan(population(), "realistic", 10_000, rate=200, seed=3)
    queries = Counter(r.query for r in requests)
    assert set(queries) <= set(VOCABULARY)
    assert queries.most_common(1)[0][0] == VOCABULARY[0]
    assert queries[VOCABULARY[0]] > 10 * queries[VOCABULARY[-1]]
    places = {(r.lat, r.lon) for r in requests}
    assert len(places) <= len(KEYS)  # every client asks from home
    assert plan(population(), "realistic", 10_000, rate=200, seed=3) == requests


def test_a_few_percent_are_keyed_and_some_are_retried_a_second_later() -> None:
    rate = 200
    requests = plan(population(), "realistic", 20_000, rate=rate, seed=5)
    by_key: dict[str, list[int]] = {}
    for slot, request in enumerate(requests):
        if request.idempotency_key is not None:
            by_key.setdefault(request.idempotency_key, []).append(slot)
    retried = {key: slots for key, slots in by_key.items() if len(slots) > 1}
    assert len(by_key) / len(requests) == pytest.approx(KEYED_SHARE, rel=0.2)
    assert len(retried) / len(requests) == pytest.approx(RETRY_SHARE, rel=0.25)
    for slots in retried.values():
        first, again = slots
        assert requests[first] == requests[again]  # the same request, sent again
        assert again - first >= RETRY_AFTER_S * rate


def test_the_new_workload_never_repeats_a_place() -> None:
    requests = plan(population(), "new", 5_000, rate=100, seed=1)
    # Only a retry (the same request again) repeats a place.
    assert len({(r.lat, r.lon) for r in requests}) == len(set(requests)) > 0.95 * len(requests)


def vegeta_result(seq: int, sent_s: float, latency_ms: float, code: int) -> dict:
    answer = {200: {"request_id": f"r{seq}"}, 503: {"error": "overloaded"}}.get(code, {})
    body = json.dumps(answer).encode()
    return {
        "seq": seq,
        "timestamp": datetime.fromtimestamp(sent_s, UTC).isoformat(),
        "latency": int(latency_ms * 1e6),
        "code": code,
        "error": "" if code else "Get ...: timeout",
        "url": f"http://h/memes?seq={seq}",
        "body": base64.b64encode(body).decode(),
    }


def test_latency_counts_from_the_scheduled_instant() -> None:
    """At 10/s request n is due at 0.1 n s. Request 2 was sent 300 ms late: its 300 ms of
    lag count in its latency, as a queue in the generator would."""
    t0 = 1_700_000_000.0
    results = [
        vegeta_result(0, t0, 10, 200),
        vegeta_result(1, t0 + 0.1, 20, 200),
        vegeta_result(2, t0 + 0.5, 10, 503),
        vegeta_result(3, t0 + 0.3, 0, 0),
        {**vegeta_result(4, t0 + 0.4, 0, 0), "url": "", "error": "no targets to attack"},
    ]
    run = summarise(results, rate=10, seconds=0.4)
    assert run.sent == 4
    assert run.latencies_ms == pytest.approx([0.0, 10.0, 20.0, 310.0], abs=0.01)
    assert run.statuses == Counter({"200": 2, "503": 1, "timeout": 1})
    assert run.refusal_latencies_ms == pytest.approx([310.0], abs=0.01)
    assert run.refusals_by_error == {"overloaded": pytest.approx([310.0], abs=0.01)}
    assert set(run.done_at) == {"r0", "r1"}
    assert run.send_lag_p99_ms == pytest.approx(300.0, abs=1)


def test_a_retry_answered_later_keeps_the_first_answer_time() -> None:
    """A retry with the same Idempotency-Key gets the same request id, seconds later
    (served from the API's settled answers): the stage breakdown must join the first."""
    t0 = 1_700_000_000.0
    retry = {**vegeta_result(1, t0 + 2.0, 5, 200), "body": vegeta_result(0, t0, 1, 200)["body"]}
    run = summarise([vegeta_result(0, t0, 30, 200), retry], rate=10, seconds=0.2)
    assert run.done_at == {"r0": pytest.approx(t0 + 0.030, abs=1e-3)}


def run_of(timeline: list[tuple[float, float, int]], rate: float, seconds: float) -> OpenLoopResult:
    latencies = sorted(ms for _, ms, _ in timeline)
    refusals = sorted(ms for _, ms, code in timeline if code in (429, 503))
    statuses = Counter(str(code) for _, _, code in timeline)
    return OpenLoopResult(
        rate,
        seconds,
        len(timeline),
        latencies,
        statuses,
        0.0,
        seconds,
        {},
        {"overloaded": refusals},
        timeline,
    )


SLO = {
    "rate_rps": 100,
    "p99_at_rate_ms": 50,
    "p99_ms": 250,
    "error_ratio_max": 0.001,
    "overload": {"goodput_ratio_min": 0.9, "refusal_p99_ms": 50, "recovery_s_max": 5},
}


def test_recovery_ends_with_the_last_slow_or_failed_second() -> None:
    # 10/s for 8 s: seconds 0-2 slow, second 3 fine, second 4 has an error, then fine.
    timeline = [(n / 10, 900.0 if n < 30 else 20.0, 503 if n == 45 else 200) for n in range(80)]
    assert recovery_s(run_of(timeline, 10, 8), p99_ms=250) == 5.0
    assert recovery_s(run_of([(n / 10, 20.0, 200) for n in range(80)], 10, 8), 250) == 0.0


def test_overload_checks_goodput_refusals_and_recovery() -> None:
    # 200/s offered for 2 s against a capacity of 100/s: 190 ok per second, the rest
    # refused in 10 ms; afterwards, latency is back after 1 s.
    over = run_of(
        [(n / 200, 100.0 if n % 20 else 10.0, 200 if n % 20 else 503) for n in range(400)],
        200,
        2,
    )
    after = run_of([(n / 100, 400.0 if n < 100 else 30.0, 200) for n in range(300)], 100, 3)
    checks = {name: (ok, detail) for name, ok, detail in check_overload(over, after, 100, SLO)}
    assert checks["goodput"][0], checks["goodput"]
    assert "190.0 ok/s" in checks["goodput"][1]
    assert checks["refusal"][0] and "20 refused" in checks["refusal"][1]
    assert checks["recovery"][0] and " 1 s after" in checks["recovery"][1]

    slow_refusals = run_of([(n / 200, 300.0, 503) for n in range(400)], 200, 2)
    passed = {name: ok for name, ok, _ in check_overload(slow_refusals, after, 100, SLO)}
    assert passed == {"goodput": False, "refusal": False, "recovery": True}

    # The excess failed fast, but as 502s (a pool too busy), not refused: no pass, even
    # with no refusal at all to be slow.
    failed_fast = run_of(
        [(n / 200, 100.0 if n % 20 else 10.0, 200 if n % 20 else 502) for n in range(400)],
        200,
        2,
    )
    checks = {name: (ok, d) for name, ok, d in check_overload(failed_fast, after, 100, SLO)}
    assert not checks["refusal"][0]
    assert "20 not served: 0 refused (429/503), 20 other errors" in checks["refusal"][1]


def test_the_rated_load_is_held_to_its_own_p99_and_capacity_to_the_looser_one() -> None:
    # 100/s for 2 s, every answer in 60 ms: within the capacity's 250 ms, not within the
    # 50 ms the SLO run at the rated load must meet.
    run = run_of([(n / 100, 60.0, 200) for n in range(200)], 100, 2)
    checks = {name: (ok, detail) for name, ok, detail in check_slo(run, SLO)}
    assert checks["p99"] == (False, "60.0 ms (need <= 50 ms)")
    assert checks["rate"][0] and checks["errors"][0]
    assert step_passes(run, SLO)
