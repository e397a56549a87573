"""The Jepsen checker's checks of requests on synthetic runs (``tests.unit.jepsen_sim``):
a clean run passes; 1. every acknowledged request has exactly one final outcome; 2. one
charge, one end; 3. no charge for a request the clients never sent; 6. what each client
was told agrees with the ledger; 8. the kind charged follows the subscription."""

from __future__ import annotations

import pytest

from tests.jepsen.checker import stable_request_id
from tests.unit.jepsen_sim import (
    TOPICS,
    Sim,
    answer,
    assert_only,
    busy,
    problem,
    problems,
    remove,
)


@pytest.fixture
def sim() -> Sim:
    return Sim()


# --- a clean run passes -------------------------------------------------------------------


def test_a_clean_history_passes_and_is_counted(sim: Sim) -> None:
    client, delivered = busy(sim)
    broke = sim.register(status=202)  # appended, not confirmed: counted as acknowledged
    sim.meme(broke, "rejected")  # keyless 402: matched to its MemeRequested by query and time
    sim.purchase(client, 2, purchase_id="order-9")
    repeat = sim.history[-1] | {"attempt": 2, "status": 200}  # a repeat: 200, same credit
    sim.history.append(repeat)
    request_id, logical = sim.meme(client, "delivered", key="k-r", told="none")
    sim.tell(client, logical, request_id, "503", key="k-r")
    sim.tell(client, logical, request_id, "200", key="k-r")  # the retry learns the outcome
    sim.meme(client, "lost", told="none")
    assert sim.records.pop(-1).topic == TOPICS.requests  # its append failed: never in the log
    verdict = sim.verdict()
    assert verdict.ok, verdict.report()
    stats = verdict.stats
    assert stats["clients"] == 2 and stats["meme_ops"] == 7 and stats["retries"] == 3
    assert stats["told_200"] == 3 and stats["told_402"] == 1 and stats["told_none"] == 2
    assert stats["outcome_delivered"] == 3 and stats["outcome_refunded"] == 2
    assert stats["registrations_acknowledged"] == 2 and stats["credits"] == 2
    assert stats["me_answers"] == 1 and stats["lookups_answered"] == 1
    assert delivered


def test_a_genuine_idempotency_conflict_passes(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 3)
    request_id, logical = sim.meme(client, "delivered", key="same-key")
    # The same key, another query: the ledger rejects it without storing anything.
    sim.request_event(client, request_id, f"jepsen {logical}", lat=1.0)
    sim.tell(client, logical, request_id, "409_conflict", key="same-key")
    verdict = sim.verdict()
    assert verdict.ok, verdict.report()
    assert verdict.stats["told_409_conflict"] == 1


def test_a_request_unknown_to_the_ledger_told_401_has_no_outcome_by_design(sim: Sim) -> None:
    client = sim.register()
    sim.meme(client, "lost", told="401")
    verdict = sim.verdict()
    assert verdict.ok, verdict.report()


def test_a_key_refused_401_does_not_excuse_a_request_without_outcome(sim: Sim) -> None:
    """A 401 for a key rotated away comes before the append: a retry refused so must not
    hide that an earlier attempt's request reached the log and never ended."""
    client = sim.register()
    request_id, logical = sim.meme(client, "lost", key="k-1", told="503")
    sim.tell(client, logical, request_id, "401_key", key="k-1")
    assert_only(sim.verdict(), "acknowledged", f"request={request_id}", "no outcome")


# --- 1. every acknowledged request has exactly one final outcome --------------------------


@pytest.mark.parametrize("told", ["200", "402", "502", "504", "409_in_progress"])
def test_an_acknowledged_request_missing_from_the_log_fails(sim: Sim, told: str) -> None:
    client = sim.register()
    request_id = stable_request_id(client, "ghost")
    status, response = (
        (200, {"request_id": request_id, "meme_id": "m"})
        if told == "200"
        else answer(told, request_id, None)
    )
    sim.line(
        "meme", "ghost", client, path="/memes", idempotency_key="ghost",
        params={"query": "jepsen ghost"}, status=status, response=response,
    )  # fmt: skip
    assert_only(sim.verdict(), "acknowledged", "logical=ghost", f"told {told}")


def test_an_acknowledged_keyless_402_without_its_event_fails(sim: Sim) -> None:
    client = sim.register()
    _, logical = sim.meme(client, "rejected")
    remove(sim, lambda r: r.topic == TOPICS.requests)  # the event is gone from the log
    assert_only(sim.verdict(), "acknowledged", f"logical={logical}", "told 402")


def test_a_request_in_the_log_without_any_outcome_fails(sim: Sim) -> None:
    client = sim.register()
    request_id, _ = sim.meme(client, "lost", told="503")  # indeterminate, but in the log
    assert_only(sim.verdict(), "acknowledged", f"request={request_id}", "no outcome")


@pytest.mark.parametrize("told", ["504", "409_in_progress"])
def test_a_request_still_open_fails(sim: Sim, told: str) -> None:
    client = sim.register()
    sim.purchase(client, 1)
    request_id, _ = sim.meme(client, "open", told=told, key="k")
    verdict = sim.verdict()
    assert_only(verdict, "outcome", f"request={request_id}", "still open")
    assert_only(verdict, "told", f"request={request_id}", "no single final outcome")
    assert not problems(verdict, "replay")  # live agrees: the request is pending there too


# --- 2. one charge, one end -----------------------------------------------------------------


def test_a_second_charge_fails(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 3)
    request_id, _ = sim.meme(client, "delivered")
    sim.entry(client, "TokensCharged", -1, request_id=request_id, tokens=1, kind="standard")
    verdict = sim.verdict()
    assert_only(verdict, "outcome", f"request={request_id}", "charged 2 times")


def test_delivered_and_refunded_fails(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 3)
    request_id, _ = sim.meme(client, "delivered")
    sim.entry(client, "TokensRefunded", 1, request_id=request_id, tokens=1, reason=2)
    assert_only(sim.verdict(), "outcome", f"request={request_id}", "both delivered and refunded")


def test_a_charge_after_a_rejection_fails(sim: Sim) -> None:
    client = sim.register()
    request_id, _ = sim.meme(client, "rejected", key="k")
    sim.purchase(client, 1)
    sim.entry(client, "TokensCharged", -1, request_id=request_id, tokens=1, kind="standard")
    assert_only(sim.verdict(), "outcome", f"request={request_id}", "rejected and also charged")


def test_an_end_without_a_charge_fails(sim: Sim) -> None:
    client = sim.register()
    sim.entry(client, "TokensRefunded", 1, request_id="nocharge", tokens=1, reason=1)
    assert_only(sim.verdict(), "outcome", "request=nocharge", "ended without a charge")


def test_a_refund_of_another_amount_fails(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 1)
    request_id, _ = sim.meme(client, "open", told="none")
    sim.entry(client, "TokensRefunded", 2, request_id=request_id, tokens=2, reason=2)
    assert_only(sim.verdict(), "outcome", f"request={request_id}", "refunded 2 tokens of 1")


# --- 3. no charge for a request the clients never sent ------------------------------------


def test_a_charge_nobody_sent_fails(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 2)
    request_id, _ = sim.meme(client, "delivered", in_history=False)
    assert_only(sim.verdict(), "unsent", f"request={request_id}", "no meme op of this client")


def test_a_charge_for_another_clients_query_fails(sim: Sim) -> None:
    alice, bob = sim.register(), sim.register()
    sim.purchase(bob, 2)
    _, logical = sim.meme(alice, "rejected")
    request_id, _ = sim.meme(bob, "delivered", in_history=False, query=f"jepsen {logical}")
    assert_only(sim.verdict(), "unsent", f"client={bob}", f"request={request_id}")


def test_keyed_requests_are_named_by_their_key_whatever_their_query(sim: Sim) -> None:
    """The availability load asks for popular memes ("cats" again and again): each op is
    named in the ledger by the request id its Idempotency-Key gives."""
    client = sim.register()
    sim.purchase(client, 2)
    for n, outcome in enumerate(("delivered", "delivered", "rejected")):
        sim.meme(client, outcome, key=f"k{n}", query="cats")
    verdict = sim.verdict()
    assert verdict.ok, verdict.report()
    assert verdict.stats["meme_ops"] == 3 and verdict.stats["told_200"] == 2


def test_a_charge_under_a_key_nobody_sent_fails(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 2)
    sim.meme(client, "delivered", key="k-sent", query="cats")
    request_id, _ = sim.meme(client, "delivered", key="k-unsent", query="cats", in_history=False)
    assert_only(sim.verdict(), "unsent", f"request={request_id}", "no meme op of this client")


def test_a_keyless_request_must_name_its_op_by_query(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 1)
    _, logical = sim.meme(client, "delivered", query="cats")
    assert_only(sim.verdict(), "history", f"logical={logical}", "Idempotency-Key")


def test_a_charge_without_its_event_fails(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 2)
    request_id, _ = sim.meme(client, "delivered")
    remove(sim, lambda r: r.topic == TOPICS.requests)
    assert_only(sim.verdict(), "unsent", f"request={request_id}", "no MemeRequested")


# --- 6. what each client was told agrees with the ledger ----------------------------------


def test_a_200_with_another_meme_fails(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 1)
    request_id, _ = sim.meme(client, "delivered")
    sim.history[-1]["response"]["meme_id"] = "forged"
    assert_only(sim.verdict(), "told", f"request={request_id}", "meme_id=forged")


def test_two_200s_of_one_request_that_disagree_fail(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 1)
    request_id, logical = sim.meme(client, "delivered", key="k")
    again = sim.tell(client, logical, request_id, "200", key="k")
    again["response"] = again["response"] | {"meme_id": "other"}
    assert_only(sim.verdict(), "told", f"request={request_id}", "different memes")


@pytest.mark.parametrize(
    ("outcome", "told", "words"),
    [
        ("delivered", "402", "told 402, ledger says delivered"),
        ("rejected", "200", "told 200 meme_id=None, ledger says rejected"),
        ("delivered", "502", "told 502, ledger says delivered"),
        ("expired", "502", "told 502, ledger says refunded"),
        ("failed", "504_refunded", "told 504 refunded, ledger says refunded"),
        ("delivered", "409_conflict", "one fingerprint"),
    ],
)
def test_an_answer_the_ledger_disagrees_with_fails(
    sim: Sim, outcome: str, told: str, words: str
) -> None:
    client = sim.register()
    sim.purchase(client, 1)
    if told == "200":
        request_id, _ = sim.meme(client, outcome, key="k", told="402")
        line = sim.history[-1]
        line["status"], line["response"] = 200, {"request_id": request_id, "meme_id": None}
    else:
        request_id, _ = sim.meme(client, outcome, key="k", told=told)
    assert_only(sim.verdict(), "told", f"request={request_id}", words)


def _told_200_then_refunded(sim: Sim, made_after_deadline_ms: int, meme_id: str) -> str:
    """A meme its generator told in time (200), while the ledger refunded the request
    first (its deadline timer): a free meme if that meme is in the outcomes topic."""
    client = sim.register()
    sim.purchase(client, 1)
    request_id, _ = sim.meme(client, "expired", key="k", told="none")
    deadline_ms = sim.last_request["deadline_ms"]
    sim.generated(client, request_id, "meme-1", deadline_ms + made_after_deadline_ms)
    line = sim.history[-1]
    line["status"], line["response"] = 200, {"request_id": request_id, "meme_id": meme_id}
    return request_id


def test_a_200_the_ledger_refunded_is_a_free_meme_if_made_in_time(sim: Sim) -> None:
    _told_200_then_refunded(sim, 0, "meme-1")
    verdict = sim.verdict()
    assert verdict.ok, verdict.report()
    assert verdict.stats["free_memes"] == 1


@pytest.mark.parametrize(("late_ms", "meme_id"), [(1, "meme-1"), (0, "meme-2")])
def test_a_200_the_ledger_refunded_without_that_meme_made_in_time_fails(
    sim: Sim, late_ms: int, meme_id: str
) -> None:
    request_id = _told_200_then_refunded(sim, late_ms, meme_id)
    assert_only(sim.verdict(), "told", f"request={request_id}", "ledger says refunded")


def test_a_lookup_the_ledger_disagrees_with_fails(sim: Sim) -> None:
    _, delivered = busy(sim)
    lookup = next(h for h in sim.history if h["op"] == "lookup")
    lookup["response"] = lookup["response"] | {"status": "refunded"}
    assert_only(sim.verdict(), "told", f"request={delivered}", "lookup said refunded")


def test_a_purchase_answer_with_another_seq_fails(sim: Sim) -> None:
    client = sim.register()
    line = sim.purchase(client, 4)
    line["response"] = line["response"] | {"seq": 9}
    assert_only(sim.verdict(), "told", f"client={client}", "'seq': 9")


# --- 8. the kind charged follows the subscription -------------------------------------------


def test_memes_of_a_subscribed_client_are_charged_as_ai(sim: Sim) -> None:
    client, _ = busy(sim)
    on_ai = sim.register()
    sim.purchase(on_ai, 5)
    sim.subscribe(on_ai)
    sim.meme(on_ai, "delivered")
    sim.meme(on_ai, "failed")
    verdict = sim.verdict()
    assert verdict.ok, verdict.report()
    assert verdict.stats["charged_ai"] == 2 and verdict.stats["charged_standard"] >= 1
    assert client


@pytest.mark.parametrize("subscribed", [True, False])
def test_a_charge_against_the_subscription_fails(sim: Sim, subscribed: bool) -> None:
    client = sim.register()
    sim.purchase(client, 5)
    if subscribed:
        sim.subscribe(client)
    wrong = "standard" if subscribed else "ai"
    request_id, _ = sim.meme(client, "delivered", charged_as=wrong)
    want = "ai" if subscribed else "standard"
    assert_only(sim.verdict(), "kind", request_id, f"charged as {wrong}", f"says {want}")


def test_an_ai_charge_delivered_as_standard_is_the_blocked_caption_fallback(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 5)
    sim.subscribe(client)
    sim.meme(client, "delivered", delivered_as="standard")
    verdict = sim.verdict()
    assert verdict.ok, verdict.report()
    assert verdict.stats["ai_delivered_standard"] == 1


def test_a_standard_charge_delivered_as_ai_fails(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 5)
    request_id, _ = sim.meme(client, "delivered", delivered_as="ai")
    assert_only(sim.verdict(), "outcome", request_id, "charged a standard meme, delivered ai")


def test_requests_the_subscription_may_not_have_preceded_are_not_judged(sim: Sim) -> None:
    """Stamped before the subscribe op's 200, or by a client whose subscribe attempts all
    failed (the PUT may or may not be in the log): either kind passes."""
    early = sim.register()
    sim.purchase(early, 5)
    sim.meme(early, "delivered", charged_as="ai")  # a first attempt that did reach the log
    sim.subscribe(early)
    unsure = sim.register()
    sim.purchase(unsure, 5)
    sim.subscribe(unsure, status=503)
    sim.meme(unsure, "delivered", charged_as="ai")
    sim.meme(unsure, "delivered", charged_as="standard")
    verdict = sim.verdict()
    assert verdict.ok, verdict.report()
    assert "charged_ai" not in verdict.stats


# --- 9. a request refused before its append never reached the log -------------------------


def refused(
    sim: Sim,
    client: str,
    logical: str,
    status: int,
    error: str,
    key: str | None,
    query: str | None = None,
) -> None:
    sim.line(
        "meme", logical, client, path="/memes", idempotency_key=key,
        params={"query": query or f"jepsen {logical}"}, status=status,
        response=problem(status, error),
    )  # fmt: skip


def test_requests_refused_before_their_append_pass_when_not_in_the_log(sim: Sim) -> None:
    client = sim.register()
    keyless, keyed = sim.name("m"), sim.name("m")
    refused(sim, client, keyless, 503, "overloaded", None)
    refused(sim, client, keyed, 429, "too_many_requests", "k2")
    refused(sim, client, keyed, 503, "not_ready", "k2")
    verdict = sim.verdict()
    assert verdict.ok, verdict.report()
    assert verdict.stats["meme_ops_refused"] == 2


def test_a_keyed_refusal_passes_beside_an_appended_request_with_the_same_query(
    sim: Sim,
) -> None:
    """Popular memes repeat (``--memes repeated``): a keyed op refused by the AI
    admission is named by its key, not by a query another op of its client appended."""
    client = sim.register()
    sim.purchase(client, 1)
    sim.meme(client, "delivered", key="k1", query="wifi")
    refused(sim, client, sim.name("m"), 503, "overloaded", "k2", query="wifi")
    verdict = sim.verdict()
    assert verdict.ok, verdict.report()
    assert verdict.stats["meme_ops_refused"] == 1


def test_a_keyed_refused_request_found_in_the_log_by_its_key_fails(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 1)
    request_id, logical = sim.meme(client, "delivered", key="k1", in_history=False)
    refused(sim, client, logical, 503, "overloaded", "k1")
    assert_only(sim.verdict(), "refused", f"logical={logical}", request_id)


@pytest.mark.parametrize(
    ("status", "error"), [(503, "overloaded"), (503, "not_ready"), (429, "too_many_requests")]
)
def test_a_refused_request_found_in_the_log_fails(sim: Sim, status: int, error: str) -> None:
    client = sim.register()
    sim.purchase(client, 1)
    request_id, logical = sim.meme(client, "delivered", in_history=False)
    refused(sim, client, logical, status, error, None)
    assert_only(sim.verdict(), "refused", f"logical={logical}", request_id)


def test_a_refusal_after_an_attempt_that_may_have_appended_is_not_judged(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 1)
    _, logical = sim.meme(client, "delivered", told="none", key="k")  # connection lost
    refused(sim, client, logical, 503, "overloaded", "k")
    verdict = sim.verdict()
    assert "refused" not in verdict.report() and "meme_ops_refused" not in verdict.stats
