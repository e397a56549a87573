"""``Sim``, a tiny stand-in for the service, and the helpers the Jepsen checker's unit
tests share (``test_jepsen_checker.py``, ``test_jepsen_checks_*.py``).

``Sim`` plays the service: it writes what the service's code writes (ledger entries,
input events, changelog records, in the wire formats of schemas/events.py and
ledger/state.py) and what a client would be told, as history lines. Each test then
breaks one thing and expects the check that guards it to say so. One contract test
(``test_jepsen_checker.py``) holds ``Sim`` to the service's own models, so that the
synthetic data stays faithful.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from typing import Any

from tests.jepsen.checker import (
    GENESIS_HASH,
    Record,
    Verdict,
    check_records,
    stable_request_id,
    topics_of,
)

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

    def billing_input(self, client_id: str, event_type: str, **fields: Any) -> Json:
        """A billing call's input on the purchases topic, as the API appends it."""
        event = {**self.envelope(client_id), "type": event_type, **fields, "reply_to": 0}
        self.append(TOPICS.purchases, client_id, compact(event))
        return event

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
        self.billing_input(client_id, "ClientRegistered", api_key_sha256=digest, name="")
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
        self.billing_input(client_id, "TokensPurchased", purchase_id=purchase_id, tokens=tokens)
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

    def rotate(
        self,
        client_id: str,
        status: int = 201,
        decided: bool = True,
        grace_ms: int = 0,
        replaced_keys: list[Json] | None = None,
    ) -> Json:
        """A new API key: asked for on the purchases topic, an ``ApiKeyRotated`` once
        decided (its account record holds the new hash), the key told on a 201. With a
        grace the entry keeps the replaced key working until the request's time plus it
        (one rotation deep), or ``replaced_keys`` as given."""
        api_key = "mk_" + uuid.uuid4().hex
        digest = hashlib.sha256(api_key.encode()).hexdigest()
        asked = self.billing_input(
            client_id, "ApiKeyRotationRequested", api_key_sha256=digest, old_key_valid_ms=grace_ms
        )
        account = self.accounts[client_id]
        if replaced_keys is None:
            old = {"api_key_sha256": account["api_key_sha256"]}
            until = {"valid_until_ms": asked["occurred_at_ms"] + grace_ms}
            replaced_keys = [old | until] if grace_ms else []
        if decided:
            # Written with the entry's account.
            account["api_key_sha256"] = digest
            account.pop("replaced_keys", None)
            if replaced_keys:
                graced = [[k["api_key_sha256"], k["valid_until_ms"]] for k in replaced_keys]
                account["replaced_keys"] = graced
            fields: dict[str, Any] = {"replaced_keys": replaced_keys} if replaced_keys else {}
            self.entry(client_id, "ApiKeyRotated", 0, api_key_sha256=digest, **fields)
        response = {"client_id": client_id, "api_key": api_key, "pending": False}
        return self.line(
            "rotate", self.name("k"), client_id, method="POST", status=status,
            path=f"/v1/clients/{client_id}/api-key",
            body={"old_key_valid_for_s": grace_ms // 1000}, response=response,
        )  # fmt: skip

    def subscribe(self, client_id: str, status: int = 200, until_ms: int | None = None) -> Json:
        """Memes AI on; the ledger records it only when the answer is 200."""
        if status == 200:
            self.billing_input(client_id, "SubscriptionRequested", active=True, until_ms=until_ms)
            # Written with the entry's account.
            self.accounts[client_id] |= {"ai_active": True, "ai_until_ms": until_ms}
            self.entry(client_id, "SubscriptionChanged", 0, active=True, until_ms=until_ms)
        response = {"client_id": client_id, "ai_active": True, "ai_until": None}
        return self.line(
            "subscribe", self.name("s"), client_id, method="PUT", status=status, body={},
            path=f"/v1/clients/{client_id}/subscription", response=response,
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
        charged_as: str | None = None,
        delivered_as: str | None = None,
    ) -> tuple[str, str]:
        """One meme request, decided as ``outcome``: delivered, rejected, failed (502),
        expired (deadline refund), open (charged, never ended) or lost (appended, never
        folded). Charged as the subscription says, or ``charged_as``; delivered as
        charged, or ``delivered_as``. Returns (request id, logical)."""
        logical = self.name("m")
        query = query or f"jepsen {logical}"
        request_id = stable_request_id(client_id, key) if key else uuid.uuid4().hex
        self.request_event(client_id, request_id, query)
        if outcome != "lost":
            kind = charged_as or ("ai" if self.accounts[client_id]["ai_active"] else "standard")
            self.decide(client_id, request_id, outcome, kind, delivered_as or kind)
        if in_history:
            self.tell(client_id, logical, request_id, told or ANSWERS[outcome], key, query)
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

    def generated(self, client_id: str, request_id: str, meme_id: str, at_ms: int) -> None:
        """A generator's ``MemeGenerated`` on the outcomes topic, made at ``at_ms``."""
        event = {
            **self.envelope(client_id, schema_version=2),
            "type": "MemeGenerated",
            "occurred_at_ms": at_ms,
            "request_id": request_id,
            "meme_id": meme_id,
            "kind": "standard",
            "template": "drake",
            "caption": "a caption",
            "image_key": f"{request_id}.png",
        }
        self.append(TOPICS.outcomes, client_id, compact(event))

    def decide(
        self,
        client_id: str,
        request_id: str,
        outcome: str,
        kind: str = "standard",
        delivered_as: str = "standard",
    ) -> None:
        event = self.last_request
        record = {
            "request_id": request_id,
            "client_id": client_id,
            "fingerprint": event["fingerprint"],
            "status": "rejected",
            "kind": None,
            "tokens": 1,
            "deadline_ms": event["deadline_ms"],
            "waiters": [],
            "reject_reason": None,
            "refund_reason": None,
            "meme": None,
            "caption": None,
        }
        r_key, q_key = f"r/{client_id}/{request_id}", f"q/{client_id}/{request_id}"
        d_key = f"d/{event['deadline_ms']:016d}/{client_id}/{request_id}"
        if outcome == "rejected" or self.accounts[client_id]["balance"] < 1:
            self.entry(client_id, "MemeRejected", 0, request_id=request_id, reason=3)
            self.set_request(r_key, record | {"reject_reason": 3})
            self.state(d_key, client_id, b"")
            return
        self.entry(client_id, "TokensCharged", -1, request_id=request_id, tokens=1, kind=kind)
        waiter = {"reply_to": 0, "correlation_id": event["event_id"]}
        record |= {"status": "charged", "kind": kind}
        self.set_request(r_key, record | {"waiters": [waiter]})
        self.state(q_key, client_id, str(event["deadline_ms"]).encode())
        if outcome == "open":
            return
        if outcome == "delivered":
            meme = self.entry(
                client_id, "MemeDelivered", 0, request_id=request_id, meme_id=f"meme-{request_id}",
                kind=delivered_as, template="drake", caption=None, image_key=f"{request_id}.png",
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
        self.state(d_key, client_id, b"")

    def set_request(self, key: str, record: Json) -> None:
        self.requests[record["client_id"], record["request_id"]] = record
        self.state(key, record["client_id"], record)

    def tell(
        self,
        client_id: str,
        logical: str,
        request_id: str,
        told: str,
        key: str | None = None,
        query: str | None = None,
    ) -> Json:
        status, response = answer(told, request_id, self.requests.get((client_id, request_id)))
        return self.line(
            "meme", logical, client_id, path="/memes", status=status, response=response,
            params={"lat": LAT, "lon": LON, "query": query or f"jepsen {logical}"},
            idempotency_key=key,
        )  # fmt: skip

    def me(self, client_id: str) -> Json:
        """What the ledger answers at the call's time: Memes AI active while it is served."""
        account = self.accounts[client_id]
        view = {k: v for k, v in account.items() if k not in ("api_key_sha256", "last_hash")}
        until, at = view["ai_until_ms"], self.clock_ms + 10  # the line's invoke time
        view["ai_active"] = view["ai_active"] and (until is None or at < until)
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
        case "401":  # the ledger's own rejection, after the append
            return 401, problem(401, "unauthorized", detail="the ledger does not know this client")
        case "401_key":  # refused before the append: a key rotated away
            return 401, problem(401, "unauthorized", detail="unknown API key")
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
