"""The Jepsen checker on synthetic histories and topic contents, no Kafka.

``Sim`` plays the service: it writes what the service's code writes (ledger entries,
input events, changelog records, in the wire formats of schemas/events.py and
ledger/state.py) and what a client would be told, as history lines. Each test then
breaks one thing and expects the check that guards it to say so. One contract test
holds ``Sim`` to the service's own models, so that the synthetic data stays faithful.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.jepsen.checker import (
    GENESIS_HASH,
    MAX_PROBLEM_LINES,
    Record,
    Verdict,
    check_records,
    roll,
    stable_request_id,
    topics_of,
)
from tests.jepsen.history import FIELDS, History, read_history

REGION = "jr"
TOPICS = topics_of(REGION)
LAT, LON = 40.73061, -73.935242
Json = dict[str, Any]


def compact(body: Json) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


class Sim:
    """A tiny stand-in for the service: the records it writes, the answers it gives."""

    def __init__(self, partitions: int = 3) -> None:
        self.partitions = partitions
        self.records: list[Record] = []
        self.history: list[Json] = []
        self.offsets: Counter[tuple[str, int]] = Counter()
        self.accounts: dict[str, Json] = {}
        self.api_keys: dict[str, str] = {}
        self.requests: dict[tuple[str, str], Json] = {}
        self.clock_ms = 1_760_000_000_000
        self.count = 0
        self.attempts: Counter[str] = Counter()
        self.last_request: Json = {}

    # --- plumbing ---------------------------------------------------------------------

    def tick(self) -> int:
        self.clock_ms += 10
        return self.clock_ms

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def partition(self, client_id: str) -> int:
        return int(client_id[:8], 16) % self.partitions

    def append(self, topic: str, client_id: str, value: bytes | None, key: str = "") -> Record:
        partition = self.partition(client_id)
        offset = self.offsets[topic, partition]
        # A transaction's commit marker takes an offset too: offsets have gaps.
        self.offsets[topic, partition] += 2 if topic == TOPICS.ledger else 1
        record = Record(topic, partition, offset, (key or client_id).encode(), value)
        self.records.append(record)
        return record

    def state(self, key: str, client_id: str, value: Json | bytes | None) -> None:
        raw = compact(value) if isinstance(value, dict) else value
        self.append(TOPICS.changelog, client_id, raw, key)

    def envelope(self, client_id: str, schema_version: int = 1) -> Json:
        return {
            "event_id": uuid.uuid4().hex,
            "schema_version": schema_version,
            "client_id": client_id,
            "region": REGION,
            "occurred_at_ms": self.tick(),
            "causation_id": None,
        }

    def entry(
        self,
        client_id: str,
        entry_type: str,
        delta: int,
        balance_after: int | None = None,
        **fields: Any,
    ) -> Json:
        """The client's next ledger entry, as the processor writes it; the account follows."""
        account = self.accounts[client_id]
        body = {
            **self.envelope(client_id, schema_version=2),
            "causation_id": uuid.uuid4().hex,
            "seq": account["seq"] + 1,
            "balance_after": account["balance"] + delta if balance_after is None else balance_after,
            "prev_hash": account["last_hash"],
            "type": entry_type,
            **fields,
        }
        raw = compact(body)
        self.append(TOPICS.ledger, client_id, raw)
        account |= {
            "seq": body["seq"],
            "balance": body["balance_after"],
            "last_hash": hashlib.sha256(raw).hexdigest(),
        }
        counters = {
            "TokensCredited": ("tokens_credited",),
            "TokensCharged": ("tokens_charged", "memes_requested"),
            "MemeRejected": ("memes_requested",),
            "MemeDelivered": ("memes_delivered",),
            "TokensRefunded": ("tokens_refunded",),
        }
        for name in counters.get(entry_type, ()):
            account[name] += fields.get("tokens", 1) if name.startswith("tokens") else 1
        self.state(f"a/{client_id}", client_id, account)
        return body

    def line(self, op: str, logical: str, client_id: str | None, **fields: Any) -> Json:
        invoke = self.tick()
        self.attempts[logical] += 1
        line = {
            "worker": 0,
            "op": op,
            "logical": logical,
            "attempt": self.attempts[logical],
            "client_id": client_id,
            "invoke_ms": invoke,
            "complete_ms": invoke + 5,
            "method": "GET",
            "path": "/",
            "params": {},
            "idempotency_key": None,
            "body": None,
            "status": 200,
            "error": None,
            "response": None,
            **fields,
        }
        self.history.append(line)
        return line

    def verdict(self) -> Verdict:
        return check_records(self.history, self.records, REGION)

    # --- what clients do --------------------------------------------------------------

    def register(self, status: int = 201) -> str:
        client_id = uuid.uuid4().hex
        api_key = "mk_" + uuid.uuid4().hex
        digest = hashlib.sha256(api_key.encode()).hexdigest()
        registered = {
            **self.envelope(client_id),
            "type": "ClientRegistered",
            "api_key_sha256": digest,
            "name": "",
            "reply_to": 0,
        }
        self.append(TOPICS.purchases, client_id, compact(registered))
        self.accounts[client_id] = {
            "client_id": client_id,
            "api_key_sha256": digest,
            "balance": 0,
            "seq": 0,
            "memes_requested": 0,
            "memes_delivered": 0,
            "tokens_credited": 0,
            "tokens_charged": 0,
            "tokens_refunded": 0,
            "ai_active": False,
            "ai_until_ms": None,
            "last_hash": GENESIS_HASH,
        }
        self.api_keys[client_id] = api_key
        self.entry(client_id, "AccountOpened", 0, api_key_sha256=digest)
        response = {"client_id": client_id, "api_key": api_key, "pending": status == 202}
        self.line(
            "register", self.name("r"), None, method="POST", path="/v1/clients", status=status,
            body={"name": ""}, response=response,
        )  # fmt: skip
        return client_id

    def purchase(
        self, client_id: str, tokens: int, purchase_id: str = "", status: int = 201
    ) -> Json:
        purchase_id = purchase_id or uuid.uuid4().hex
        purchased = {
            **self.envelope(client_id),
            "type": "TokensPurchased",
            "purchase_id": purchase_id,
            "tokens": tokens,
            "reply_to": 0,
        }
        self.append(TOPICS.purchases, client_id, compact(purchased))
        credited = self.entry(
            client_id, "TokensCredited", tokens, purchase_id=purchase_id, tokens=tokens
        )
        record = {
            "purchase_id": purchase_id,
            "client_id": client_id,
            "tokens": tokens,
            "credited": credited,
        }
        self.state(f"p/{client_id}/{purchase_id}", client_id, record)
        told = {k: credited[k] for k in ("purchase_id", "tokens", "balance_after", "seq")}
        return self.line(
            "purchase", self.name("p"), client_id, method="POST", status=status,
            path=f"/v1/clients/{client_id}/purchases",
            body={"purchase_id": purchase_id, "tokens": tokens}, response=told,
        )  # fmt: skip

    def meme(
        self,
        client_id: str,
        outcome: str = "delivered",
        *,
        key: str | None = None,
        told: str | None = None,
        in_history: bool = True,
        query: str | None = None,
    ) -> tuple[str, str]:
        """One meme request, decided as ``outcome``: delivered, rejected, failed (502),
        expired (deadline refund), open (charged, never ended) or lost (appended, never
        folded). Returns (request id, logical)."""
        logical = self.name("m")
        query = query or f"jepsen {logical}"
        request_id = stable_request_id(client_id, key) if key else uuid.uuid4().hex
        self.request_event(client_id, request_id, query)
        if outcome != "lost":
            self.decide(client_id, request_id, outcome)
        if in_history:
            self.tell(client_id, logical, request_id, told or ANSWERS[outcome], key=key)
        return request_id, logical

    def request_event(self, client_id: str, request_id: str, query: str, lat: float = LAT) -> Json:
        event = {
            **self.envelope(client_id),
            "type": "MemeRequested",
            "request_id": request_id,
            "fingerprint": hashlib.sha256(f"{lat!r}|{LON!r}|{query}".encode()).hexdigest()[:32],
            "lat": lat,
            "lon": LON,
            "query": query,
            "deadline_ms": self.clock_ms + 5_000,
            "reply_to": 0,
        }
        self.append(TOPICS.requests, client_id, compact(event))
        self.last_request = event
        return event

    def decide(self, client_id: str, request_id: str, outcome: str) -> None:
        event = self.last_request
        record = {
            "request_id": request_id,
            "client_id": client_id,
            "fingerprint": event["fingerprint"],
            "status": "rejected",
            "kind": None,
            "tokens": 1,
            "deadline_ms": 0,
            "waiters": [],
            "reject_reason": None,
            "refund_reason": None,
            "meme": None,
            "caption": None,
        }
        r_key, q_key = f"r/{client_id}/{request_id}", f"q/{client_id}/{request_id}"
        if outcome == "rejected" or self.accounts[client_id]["balance"] < 1:
            self.entry(client_id, "MemeRejected", 0, request_id=request_id, reason=3)
            self.set_request(r_key, record | {"reject_reason": 3})
            return
        self.entry(client_id, "TokensCharged", -1, request_id=request_id, tokens=1, kind="standard")
        waiter = {"reply_to": 0, "correlation_id": event["event_id"]}
        record |= {"status": "charged", "kind": "standard", "deadline_ms": event["deadline_ms"]}
        self.set_request(r_key, record | {"waiters": [waiter]})
        self.state(q_key, client_id, str(event["deadline_ms"]).encode())
        if outcome == "open":
            return
        if outcome == "delivered":
            meme = self.entry(
                client_id, "MemeDelivered", 0, request_id=request_id, meme_id=f"meme-{request_id}",
                kind="standard", template="drake", caption=None, image_key=f"{request_id}.png",
            )  # fmt: skip
            record |= {"status": "delivered", "meme": meme, "caption": "a caption"}
        else:
            reason = 1 if outcome == "failed" else 2
            self.entry(
                client_id, "TokensRefunded", 1, request_id=request_id, tokens=1, reason=reason
            )
            record |= {"status": "refunded", "refund_reason": reason}
        self.set_request(r_key, record)
        self.state(q_key, client_id, None)

    def set_request(self, key: str, record: Json) -> None:
        self.requests[record["client_id"], record["request_id"]] = record
        self.state(key, record["client_id"], record)

    def tell(
        self, client_id: str, logical: str, request_id: str, told: str, key: str | None = None
    ) -> Json:
        status, response = answer(told, request_id, self.requests.get((client_id, request_id)))
        return self.line(
            "meme", logical, client_id, path="/memes", status=status, response=response,
            params={"lat": LAT, "lon": LON, "query": f"jepsen {logical}"}, idempotency_key=key,
        )  # fmt: skip

    def me(self, client_id: str) -> Json:
        account = self.accounts[client_id]
        view = {k: v for k, v in account.items() if k not in ("api_key_sha256", "last_hash")}
        return self.line("me", self.name("a"), client_id, path="/v1/me", response=view)

    def lookup(self, client_id: str, request_id: str) -> Json:
        record = self.requests[client_id, request_id]
        view = {k: record[k] for k in ("request_id", "status", "kind", "reject_reason")}
        view |= {k: record[k] for k in ("refund_reason", "meme", "caption")}
        return self.line(
            "lookup", self.name("l"), client_id, path=f"/v1/requests/{request_id}", response=view
        )


ANSWERS = {
    "delivered": "200",
    "rejected": "402",
    "failed": "502",
    "expired": "504_refunded",
    "open": "504",
    "lost": "none",
}


def problem(status: int, error: str, **fields: Any) -> Json:
    return {"type": "about:blank", "title": "", "status": status, "error": error, **fields}


def answer(told: str, request_id: str, record: Json | None) -> tuple[int | None, Json | None]:
    """What /memes answers, given what the ledger decided (api/routes/memes.py)."""
    match told:
        case "200":
            assert record is not None and record["meme"] is not None
            meme = record["meme"]
            return 200, {
                "request_id": request_id, "meme_id": meme["meme_id"], "caption": "a caption",
                "template": meme["template"], "kind": meme["kind"],
                "image_url": f"/v1/images/{meme['image_key']}", "tokens_charged": 1,
                "balance_after": meme["balance_after"],
            }  # fmt: skip
        case "402":
            return 402, problem(402, "insufficient_tokens", balance=0)
        case "502":
            return 502, problem(502, "generation_failed", request_id=request_id, refunded=True)
        case "504_refunded":
            return 504, problem(504, "deadline_exceeded", request_id=request_id, refunded=True)
        case "504":
            return 504, problem(504, "deadline_exceeded", request_id=request_id)
        case "503":
            return 503, problem(503, "kafka_unavailable", request_id=request_id)
        case "409_conflict":
            return 409, problem(409, "conflict", request_id=request_id)
        case "409_in_progress":
            return 409, problem(409, "request_in_progress", request_id=request_id)
        case "401":
            return 401, problem(401, "unauthorized")
        case "none":
            return None, None
    raise ValueError(told)


def problems(verdict: Verdict, check: str) -> list[str]:
    return [line for line in verdict.problems if line.startswith(f"[{check}]")]


def assert_only(verdict: Verdict, check: str, *words: str) -> None:
    """The verdict failed on ``check``, with a line naming all of ``words``."""
    assert not verdict.ok
    lines = problems(verdict, check)
    assert any(all(w in line for w in words) for line in lines), verdict.report()


@pytest.fixture
def sim() -> Sim:
    return Sim()


def busy(sim: Sim) -> tuple[str, str]:
    """A client with a bit of everything; returns (client id, a delivered request id)."""
    client = sim.register()
    sim.purchase(client, 5)
    delivered, _ = sim.meme(client, "delivered", key="k-1")
    sim.meme(client, "failed")
    sim.meme(client, "expired", key="k-3")
    sim.meme(client, "delivered")
    sim.lookup(client, delivered)
    sim.me(client)
    return client, delivered


def remove(sim: Sim, predicate: Any) -> None:
    sim.records = [r for r in sim.records if not predicate(r)]


def ledger_bodies(sim: Sim) -> list[tuple[Record, Json]]:
    return [(r, json.loads(r.value or b"")) for r in sim.records if r.topic == TOPICS.ledger]


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


def test_a_charge_without_its_event_fails(sim: Sim) -> None:
    client = sim.register()
    sim.purchase(client, 2)
    request_id, _ = sim.meme(client, "delivered")
    remove(sim, lambda r: r.topic == TOPICS.requests)
    assert_only(sim.verdict(), "unsent", f"request={request_id}", "no MemeRequested")


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


def test_a_live_purchase_or_request_the_ledger_never_had_fails(sim: Sim) -> None:
    client, _ = busy(sim)
    sim.append(TOPICS.changelog, client, b'{"tokens":1}', f"p/{client}/phantom")
    sim.append(TOPICS.changelog, client, b'{"status":"charged"}', f"r/{client}/phantom")
    verdict = sim.verdict()
    assert_only(verdict, "replay", "purchase=phantom", "nothing in the ledger")
    assert_only(verdict, "replay", "request=phantom", "nothing in the ledger")


# --- the verdict, the history file, independence ----------------------------------------


def test_problems_are_capped_with_a_count(sim: Sim) -> None:
    client = sim.register()
    for n in range(MAX_PROBLEM_LINES + 5):
        sim.line("meme", f"g{n}", client, params={"query": f"jepsen g{n}"}, status=402)
    verdict = sim.verdict()
    assert len(verdict.problems) == MAX_PROBLEM_LINES + 1
    assert verdict.problems[-1] == "... and 5 more problems"
    assert verdict.stats["problems"] == MAX_PROBLEM_LINES + 5


def test_unreadable_records_are_problems_not_crashes(sim: Sim) -> None:
    client, _ = busy(sim)
    sim.append(TOPICS.ledger, client, b"not json")
    sim.append(TOPICS.requests, client, b'{"type":"MemeRequested"}')
    verdict = sim.verdict()
    assert_only(verdict, "log", "not a JSON object")
    assert_only(verdict, "log", "type=MemeRequested: missing")


def test_the_synthetic_records_are_what_the_service_writes(sim: Sim) -> None:
    """Holds ``Sim`` to the service's own models (this test may import them; the checker
    may not): every record parses and re-serialises to the same bytes, so sha256 of a
    record is the service's ``entry_hash``, and the service's replay agrees."""
    from pydantic import BaseModel

    from ledger.replay import Replay
    from ledger.state import Account, PurchaseRecord, RequestRecord
    from schemas.events import dump, entry_hash, parse_entry, parse_input

    busy(sim)
    sim.meme(sim.register(), "rejected")
    entries = []
    for record in sim.records:
        raw = record.value or b""
        if record.topic == TOPICS.ledger:
            entry = parse_entry(raw)
            assert dump(entry) == raw and entry_hash(entry) == hashlib.sha256(raw).hexdigest()
            entries.append(entry)
        elif record.topic in (TOPICS.requests, TOPICS.purchases):
            assert dump(parse_input(raw)) == raw
    replay = Replay().apply_all(entries)
    assert not replay.violations
    live = {r.key: r.value for r in sim.records if r.topic == TOPICS.changelog}
    models: dict[bytes, type[BaseModel]] = {
        b"a": Account,
        b"r": RequestRecord,
        b"p": PurchaseRecord,
    }
    for key, value in live.items():
        model = models.get((key or b"")[:1])
        if model is not None and value is not None:
            assert model.model_validate_json(value).model_dump_json().encode() == value
    for client_id, account in replay.accounts.items():
        assert live[f"a/{client_id}".encode()] == account.model_dump_json().encode()


def test_a_request_id_from_a_key_is_the_services(sim: Sim) -> None:
    from api.routes.memes import request_id_for

    assert stable_request_id("c1", "key-1") == request_id_for("c1", "key-1")


REPO_PACKAGES = ("api", "core", "ledger", "maas", "maas_client", "memes", "processors", "schemas")
ALLOWED = {"confluent_kafka", "__future__", *sys.stdlib_module_names}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


@pytest.mark.parametrize("module", ["checker.py", "history.py"])
def test_the_checker_imports_nothing_of_the_service(module: str) -> None:
    jepsen = Path(__file__).resolve().parents[1] / "jepsen"
    for name in imports_of(jepsen / module):
        top = name.split(".")[0]
        assert top not in REPO_PACKAGES, f"{module} imports {name}"
        assert top in ALLOWED or name == "tests.jepsen.history", f"{module} imports {name}"


def history_line(n: int) -> Json:
    return {name: None for name in FIELDS} | {
        "worker": n % 4, "op": "meme", "logical": f"l{n}", "attempt": 1,
        "invoke_ms": n, "complete_ms": n + 1, "method": "GET", "path": "/memes",
        "params": {"query": f"jepsen l{n}"},
    }  # fmt: skip


def test_history_lines_from_threads_and_tasks_are_whole(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    with History(path) as history:

        def write(start: int) -> None:
            for n in range(start, start + 200):
                history.record(history_line(n))

        threads = [threading.Thread(target=write, args=(k * 1000,)) for k in range(4)]
        for thread in threads:
            thread.start()

        async def tasks() -> None:
            async def one(n: int) -> None:
                history.record(history_line(n))

            await asyncio.gather(*(one(10_000 + n) for n in range(200)))

        asyncio.run(tasks())
        for thread in threads:
            thread.join()
    assert len(read_history(path)) == 1000


def test_history_drops_a_last_line_cut_by_a_kill_and_checks_fields(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    with History(path) as history:
        history.record(history_line(1))
    with path.open("a") as out:
        out.write('{"worker": 0, "op": "me')  # the writer died here
    assert [h["logical"] for h in read_history(path)] == ["l1"]
    with pytest.raises(ValueError, match="missing"), History(path) as history:
        history.record({"worker": 0})


def test_twenty_thousand_requests_check_in_a_few_seconds() -> None:
    sim = Sim(partitions=6)
    clients = [sim.register() for _ in range(100)]
    for client in clients:
        sim.purchase(client, 150)
    outcomes = ["delivered"] * 6 + ["failed", "expired", "rejected"]
    for n in range(20_000):
        client = clients[n % len(clients)]
        sim.meme(client, outcomes[n % len(outcomes)], key=f"k{n}" if n % 2 else None)
    # CPU time, not wall time: the machine running the tests may be busy with others.
    started = time.process_time()
    verdict = sim.verdict()
    elapsed_s = time.process_time() - started
    assert verdict.ok, verdict.report()
    assert verdict.stats["meme_ops"] == 20_000
    assert elapsed_s < 15, f"check took {elapsed_s:.1f} s"
