"""The Jepsen checker's checks of accounts, writes and replay on synthetic runs
(``tests.unit.jepsen_sim``): 4. seq, chain, conservation, no overdraft; 5. nothing
acknowledged is missing; 7. replay equals live; 9. a purchase refused before its append
was never appended."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.jepsen.checker import GENESIS_HASH, Record, roll
from tests.unit.jepsen_sim import (
    TOPICS,
    Json,
    Sim,
    assert_only,
    busy,
    compact,
    ledger_bodies,
    problem,
    remove,
)


@pytest.fixture
def sim() -> Sim:
    return Sim()


# --- 4. seq, chain, conservation, no overdraft --------------------------------------------


def test_a_missing_entry_breaks_the_seq(sim: Sim) -> None:
    client, _ = busy(sim)
    third = next(r for r, body in ledger_bodies(sim) if body["seq"] == 3)
    remove(sim, lambda r: r == third)
    assert_only(sim.verdict(), "account", f"client={client} seq=4", "seqs 3..3 missing")


def test_an_edited_entry_breaks_the_chain(sim: Sim) -> None:
    client, _ = busy(sim)
    record, body = next(rb for rb in ledger_bodies(sim) if rb[1]["seq"] == 3)
    edited = record._replace(value=compact(body | {"occurred_at_ms": body["occurred_at_ms"] + 1}))
    sim.records[sim.records.index(record)] = edited
    verdict = sim.verdict()
    assert_only(verdict, "account", f"client={client} seq=4", "prev_hash is not the hash of seq 3")


def test_a_wrong_balance_after_fails_and_breaks_conservation(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 2)
    sim.entry(client, "TokensCredited", 1, balance_after=7, purchase_id="p", tokens=1)
    verdict = sim.verdict()
    assert_only(verdict, "account", f"client={client} seq=3", "balance_after 7, expected 2 +1 = 3")
    assert_only(verdict, "account", f"client={client}: credited - charged + refunded = 3")


def test_a_negative_balance_fails(sim: Sim) -> None:
    client = sim.register()
    sim.entry(client, "TokensCharged", -1, request_id="x", tokens=1, kind="standard")
    assert_only(sim.verdict(), "account", f"client={client} seq=2", "negative balance_after -1")


def test_a_first_entry_that_is_not_account_opened_fails(sim: Sim) -> None:
    client, _ = busy(sim)
    remove(sim, lambda r: r.topic == TOPICS.ledger and b'"AccountOpened"' in (r.value or b""))
    assert_only(sim.verdict(), "account", f"client={client} seq=2", "not AccountOpened seq 1")


def test_a_me_answer_that_the_ledger_does_not_say_fails(sim: Sim) -> None:
    client, _ = busy(sim)
    me = next(h for h in sim.history if h["op"] == "me")
    me["response"] = me["response"] | {"balance": me["response"]["balance"] + 1}
    assert_only(sim.verdict(), "account", f"client={client}", "/v1/me told balance=")


def test_a_me_answer_beyond_the_ledger_fails(sim: Sim) -> None:
    client, _ = busy(sim)
    me = next(h for h in sim.history if h["op"] == "me")
    me["response"] = me["response"] | {"seq": 99}
    assert_only(sim.verdict(), "account", f"client={client}", "answered seq 99")


def test_a_me_answer_says_memes_ai_is_active_only_while_it_is_served(sim: Sim) -> None:
    """The view's ai_active is the switch and its end at the query's time: off once the
    subscription's until has passed, though the switch is still on in the ledger."""
    client, _ = busy(sim)
    sim.subscribe(client, until_ms=sim.clock_ms + 1_000)
    during = sim.me(client)
    sim.clock_ms += 2_000
    after = sim.me(client)
    assert (during["response"]["ai_active"], after["response"]["ai_active"]) == (True, False)
    assert sim.verdict().ok

    after["response"] = after["response"] | {"ai_active": True}  # the switch, not the service
    assert_only(sim.verdict(), "account", f"client={client}", "/v1/me told ai_active=True")


def test_checkpoint_heads_are_checked(sim: Sim) -> None:
    client, _ = busy(sim)
    entries = [r for r, _ in ledger_bodies(sim) if r.partition == sim.partition(client)]
    head = GENESIS_HASH
    for record in entries:
        head = roll(head, hashlib.sha256(record.value or b"").hexdigest())
    checkpoint = {
        "topic": TOPICS.ledger,
        "partition": entries[-1].partition,
        "offset": entries[-1].offset,
        "head": head,
        "signature": "0" * 64,
    }
    sim.append(TOPICS.checkpoints, "00000000", compact(checkpoint))
    verdict = sim.verdict()
    assert verdict.ok and verdict.stats["checkpoints"] == 1, verdict.report()
    sim.append(TOPICS.checkpoints, "00000000", compact(checkpoint | {"head": "f" * 64}))
    assert_only(sim.verdict(), "account", f"offset={entries[-1].offset}", "head differs")


# --- 5. nothing acknowledged is missing ---------------------------------------------------


def test_an_acknowledged_registration_without_an_account_fails(sim: Sim) -> None:
    client = sim.register()
    remove(sim, lambda r: client.encode() in (r.key or b""))
    assert_only(sim.verdict(), "missing", f"client={client}", "told 201, no account")


def test_an_account_opened_with_another_key_fails(sim: Sim) -> None:
    client = sim.register()
    sim.history[-1]["response"]["api_key"] = "mk_other"
    assert_only(sim.verdict(), "missing", f"client={client}", "another key")


def test_a_rotated_key_is_the_accounts_key_from_its_entry_on(sim: Sim) -> None:
    """Replay follows ``ApiKeyRotated``: the live account holds the new key's hash, and
    the registration is still checked against the key it opened with."""
    client, _ = busy(sim)
    sim.rotate(client)
    sim.meme(client, "delivered")
    sim.rotate(client, status=504, decided=False)  # not confirmed, never decided
    verdict = sim.verdict()
    assert verdict.ok, verdict.report()
    assert verdict.stats["rotations_acknowledged"] == 1
    assert verdict.stats["keys_rotated"] == 1


def test_rotations_with_a_grace_keep_the_keys_they_asked_for(sim: Sim) -> None:
    client, _ = busy(sim)
    sim.rotate(client, grace_ms=5_000)
    sim.rotate(client)  # a leaked key: no grace, none kept
    verdict = sim.verdict()
    assert verdict.ok, verdict.report()
    assert verdict.stats["keys_in_a_grace"] == 1


def test_a_rotation_that_drops_the_grace_it_was_asked_for_fails(sim: Sim) -> None:
    client = sim.register()
    sim.rotate(client, grace_ms=5_000, replaced_keys=[])
    assert_only(sim.verdict(), "missing", f"client={client}", "keeps {} working")


def test_a_rotation_without_a_grace_that_keeps_a_key_fails(sim: Sim) -> None:
    client = sim.register()
    old = sim.accounts[client]["api_key_sha256"]
    sim.rotate(client, replaced_keys=[{"api_key_sha256": old, "valid_until_ms": 10**13}])
    assert_only(sim.verdict(), "missing", f"client={client}", "the rotation asked for {}")


def test_an_acknowledged_rotation_without_its_entry_fails(sim: Sim) -> None:
    client = sim.register()
    sim.rotate(client, decided=False)
    assert_only(sim.verdict(), "missing", f"client={client}", "told 201, no ApiKeyRotated")


def test_a_key_rotated_to_a_key_nobody_asked_for_fails(sim: Sim) -> None:
    client = sim.register()
    sim.rotate(client)
    remove(sim, lambda r: r.topic == TOPICS.purchases and b"ApiKeyRotationRequested" in r.value)
    assert_only(sim.verdict(), "missing", f"client={client}", "no ApiKeyRotationRequested")


def test_a_repeated_registration_naming_no_account_fails(sim: Sim) -> None:
    client = sim.register()
    sim.line(
        "register", sim.name("r"), None, method="POST", path="/v1/clients", status=409,
        idempotency_key="customer-1", body={"name": ""},
        response={"error": "already_registered", "client_id": client + "0"},
    )  # fmt: skip
    assert_only(sim.verdict(), "missing", f"client={client}0", "already registered, no account")


def test_an_acknowledged_purchase_without_its_credit_fails(sim: Sim) -> None:
    client = sim.register()
    line = sim.purchase(client, 4)
    forged = line | {"logical": "p-ghost", "body": {"purchase_id": "ghost", "tokens": 4}}
    sim.history.append(forged)
    assert_only(sim.verdict(), "missing", "purchase=ghost", "told 201")


def test_a_purchase_credited_with_other_tokens_fails(sim: Sim) -> None:
    client = sim.register()
    line = sim.purchase(client, 4)
    line["body"] = line["body"] | {"tokens": 5}
    assert_only(sim.verdict(), "missing", f"client={client}", "told 201, 5 tokens: [4]")


def test_a_purchase_credited_twice_fails(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 4, purchase_id="twice")
    sim.purchase(client, 4, purchase_id="twice")
    verdict = sim.verdict()
    assert_only(verdict, "missing", "purchase=twice", "credited 2 times")


def test_a_credit_nobody_purchased_fails(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 4, purchase_id="real")
    remove(sim, lambda r: r.topic == TOPICS.purchases and b"TokensPurchased" in (r.value or b""))
    assert_only(sim.verdict(), "missing", "purchase=real", "no TokensPurchased")


# --- 7. replay equals live ------------------------------------------------------------------


def live_record(sim: Sim, key: str) -> tuple[Record, Json]:
    record = [r for r in sim.records if r.key == key.encode()][-1]
    return record, json.loads(record.value or b"")


def replace_live(sim: Sim, key: str, value: bytes | None) -> None:
    sim.append(TOPICS.changelog, key.split("/")[1], value, key)


@pytest.mark.parametrize(
    ("key", "change", "words"),
    [
        ("a/{client}", {"balance": 42}, "balance: live 42"),
        ("a/{client}", {"last_hash": "e" * 64}, "last_hash: live"),
        ("r/{client}/{request}", {"status": "refunded"}, "status: live 'refunded'"),
        ("r/{client}/{request}", {"fingerprint": "abc"}, "fingerprint: live 'abc'"),
        ("r/{client}/{request}", {"meme": None}, "meme: live None"),
    ],
)
def test_a_live_record_that_differs_from_the_replay_fails(
    sim: Sim, key: str, change: Json, words: str
) -> None:
    client, delivered = busy(sim)
    key = key.format(client=client, request=delivered)
    _, value = live_record(sim, key)
    replace_live(sim, key, compact(value | change))
    assert_only(sim.verdict(), "replay", words)


def test_a_live_record_deleted_by_a_tombstone_is_missing(sim: Sim) -> None:
    client, delivered = busy(sim)
    replace_live(sim, f"r/{client}/{delivered}", None)
    assert_only(sim.verdict(), "replay", f"request={delivered}", "no live record")


def test_a_pending_key_left_after_the_end_fails(sim: Sim) -> None:
    client, delivered = busy(sim)
    sim.append(TOPICS.changelog, client, b"1", f"q/{client}/{delivered}")
    assert_only(sim.verdict(), "replay", f"pending client={client}", "replay says delivered")


def ended_key_of(sim: Sim, request: str) -> str:
    (key,) = {
        (r.key or b"").decode()
        for r in sim.records
        if r.topic == TOPICS.changelog and (r.key or b"").startswith(b"d/")
        if (r.key or b"").endswith(request.encode())
    }
    return key


def test_an_ended_request_without_its_index_entry_fails(sim: Sim) -> None:
    client, delivered = busy(sim)
    sim.append(TOPICS.changelog, client, None, ended_key_of(sim, delivered))
    assert_only(sim.verdict(), "replay", f"ended index client={client}", "no entry")


def test_an_index_entry_under_another_deadline_or_of_an_open_request_fails(sim: Sim) -> None:
    client, delivered = busy(sim)
    sim.append(TOPICS.changelog, client, None, ended_key_of(sim, delivered))
    sim.append(TOPICS.changelog, client, b"", f"d/{0:016d}/{client}/{delivered}")
    opened, _ = sim.meme(client, "open")
    sim.append(TOPICS.changelog, client, b"", f"d/{1:016d}/{client}/{opened}")
    verdict = sim.verdict()
    assert_only(verdict, "replay", f"request={delivered}", "deadline '0000000000000000'")
    assert_only(verdict, "replay", f"request={opened}", "an entry, replay says")


def test_a_live_purchase_or_request_the_ledger_never_had_fails(sim: Sim) -> None:
    client, _ = busy(sim)
    sim.append(TOPICS.changelog, client, b'{"tokens":1}', f"p/{client}/phantom")
    sim.append(TOPICS.changelog, client, b'{"status":"charged"}', f"r/{client}/phantom")
    verdict = sim.verdict()
    assert_only(verdict, "replay", "purchase=phantom", "nothing in the ledger")
    assert_only(verdict, "replay", "request=phantom", "nothing in the ledger")


# --- 9. a purchase refused before its append was never appended ----------------------------


def refused_purchase(sim: Sim, client: str, purchase_id: str, status: int, error: str) -> None:
    sim.line(
        "purchase", sim.name("p"), client, method="POST", status=status,
        path=f"/v1/clients/{client}/purchases", body={"purchase_id": purchase_id, "tokens": 3},
        response=problem(status, error),
    )  # fmt: skip


def test_a_purchase_refused_before_its_append_passes_when_not_in_the_log(sim: Sim) -> None:
    client = sim.register()
    refused_purchase(sim, client, "order-1", 503, "overloaded")
    refused_purchase(sim, client, "order-1", 429, "too_many_requests")  # billing sent it twice
    verdict = sim.verdict()
    assert verdict.ok, verdict.report()
    assert verdict.stats["purchases_refused"] == 1


def test_a_refused_purchase_found_in_the_log_fails(sim: Sim) -> None:
    client = sim.register()
    told = sim.purchase(client, 3, purchase_id="order-2")
    told.update(status=503, response=problem(503, "not_ready"))  # the API said: not appended
    assert_only(sim.verdict(), "refused", "purchase=order-2", "TokensPurchased")


def test_a_purchase_refused_once_and_credited_by_its_twin_is_not_judged(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 3, purchase_id="order-3")
    refused_purchase(sim, client, "order-3", 503, "overloaded")
    verdict = sim.verdict()
    assert verdict.ok, verdict.report()
    assert "purchases_refused" not in verdict.stats
