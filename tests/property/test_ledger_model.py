"""The ledger against a reference model, over random interleavings of every input.

A hypothesis state machine drives the real core (``MemoryLedger``: the fold plus a
dict) with registrations, purchases, subscription changes, meme requests (fresh and
repeated ids, same or other parameters, another client's id, redelivered inputs),
generator successes and failures, duplicate outcomes, expiries (on time and early) and
the passing of time. A deliberately plain reference model
(dicts of balances and request statuses, written from the rules in ``ledger.fold``'s
docstring, not from its code) predicts every decision, and each prediction is checked.
After every step the named invariants below must hold; on failure hypothesis prints
the shortest sequence of steps and a ``@reproduce_failure`` blob to replay it.

Ids come from small pools on purpose (three clients, four purchase ids per client,
two fingerprints), so repeats, conflicts and unknown clients happen often; request ids,
like purchase ids, belong to their client, so the model keys requests by
``(client_id, request_id)`` and often reuses one client's id for another; and time moves
in steps of a few ms next to subscription ends and deadlines of a few ms, so the
boundaries (a request at exactly ``until_ms``) are hit, not stepped over.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TypeVar

from hypothesis import event as note_path
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ledger.fold import Decision, Expire, Forget, evolve
from ledger.memory import MemoryLedger
from ledger.state import MAX_WAITERS, PENDING_PREFIX, Account, decode_request, parse_pending
from ledger.whatif import input_of
from schemas.events import (
    AccountOpened,
    AccountQueried,
    ApiKeyRotated,
    ApiKeyRotationRequested,
    ClientRegistered,
    ErasureRequested,
    InputEvent,
    LedgerEntry,
    LedgerEntryUnion,
    MemeApproved,
    MemeDelivered,
    MemeFailed,
    MemeGenerated,
    MemeRejected,
    MemeRequested,
    PersonalDataErased,
    Reply,
    RequestQueried,
    SubscriptionChanged,
    SubscriptionRequested,
    TokensCharged,
    TokensCredited,
    TokensPurchased,
    TokensRefunded,
)

REGION = "eu"
API_KEY_SHA256 = "cd" * 32
ROTATED_KEYS = ("ab" * 32, "ef" * 32)
CLIENTS = ("c0", "c1", "c2")
PURCHASE_IDS = ("p0", "p1", "p2", "p3")
FINGERPRINTS = ("0" * 16, "f" * 16)
PRICE = 1  # tokens per meme, as the service promises its clients

EntryT = TypeVar("EntryT", bound=LedgerEntry)

# Reference-model reasons, spelled out rather than imported: the model says what the
# contract promises, the ledger must agree.
UNKNOWN_CLIENT, IDEMPOTENCY_CONFLICT, INSUFFICIENT_TOKENS = 1, 2, 3
PURCHASE_UNKNOWN_CLIENT, PURCHASE_CONFLICT = 1, 2
GENERATOR_FAILED, DEADLINE_EXPIRED = 1, 2

MACHINE_SETTINGS = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,  # other suites share the machine; a slow step is not a failure
    print_blob=True,
)


@dataclass
class ClientModel:
    seq: int = 1  # AccountOpened is entry 1
    balance: int = 0
    credited: int = 0
    charged: int = 0
    refunded: int = 0
    requested: int = 0
    delivered: int = 0
    ai_active: bool = False
    ai_until_ms: int | None = None
    api_key_sha256: str = API_KEY_SHA256
    replaced_keys: dict[str, int] = field(default_factory=dict)  # key hash -> works until
    purchases: dict[str, int] = field(default_factory=dict)  # purchase id -> tokens

    def ai_at(self, now_ms: int) -> bool:
        return self.ai_active and (self.ai_until_ms is None or now_ms < self.ai_until_ms)


Key = tuple[str, str]  # (client_id, request_id): request ids are scoped per client


@dataclass
class RequestModel:
    client_id: str
    fingerprint: str
    status: str  # charged | delivered | refunded | rejected
    kind: str | None
    deadline_ms: int
    waiters: list[tuple[int, str]]  # (reply_to, correlation id), charged requests only
    reason: int | None = None  # reject reason or refund reason
    meme_id: str | None = None
    caption: str | None = None  # of a delivered meme, until erased


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = MemoryLedger()
        self.clients: dict[str, ClientModel] = {}
        self.requests: dict[Key, RequestModel] = {}
        self.sent_requests: list[MemeRequested] = []  # for redelivery
        self.approved: list[MemeApproved] = []  # work sent to the generator pools
        self.now_ms = 0
        self._ids = 0
        self._reply_to = 0

    # --- helpers ----------------------------------------------------------------------

    def _event_id(self) -> str:
        self._ids += 1
        return f"e{self._ids}"

    def _handle(self, event: InputEvent | Expire) -> Decision:
        decision = self.ledger.handle(event)
        if decision.approved is not None:
            self.approved.append(decision.approved)
        return decision

    def _next_reply_to(self) -> int:
        # Distinct partitions per input, so a reply routed to the wrong waiter shows.
        self._reply_to += 1
        return self._reply_to

    def _envelope(self, client_id: str) -> dict[str, object]:
        return {
            "event_id": self._event_id(),
            "client_id": client_id,
            "region": REGION,
            "occurred_at_ms": self.now_ms,
        }

    def _one_entry(self, decision: Decision, client_id: str, entry_type: type[EntryT]) -> EntryT:
        """The decision appends exactly one entry of this type, at the model's next seq."""
        assert len(decision.entries) == 1, decision.entries
        (entry,) = decision.entries
        assert isinstance(entry, entry_type), entry
        client = self.clients[client_id]
        client.seq += 1
        assert (entry.client_id, entry.seq) == (client_id, client.seq), entry
        return entry

    def _known_or_not_found(
        self, client_id: str, decision: Decision, reply: Reply
    ) -> ClientModel | None:
        """The model's client; for one it does not know, the ledger must have answered
        ``not_found`` and appended nothing."""
        client = self.clients.get(client_id)
        if client is None:
            assert decision.entries == ()
            assert reply.outcome == "not_found"
        return client

    @staticmethod
    def _only_reply(decision: Decision, reply_to: int, correlation_id: str) -> Reply:
        assert len(decision.replies) == 1, decision.replies
        (to, reply) = decision.replies[0]
        assert (to, reply.correlation_id) == (reply_to, correlation_id)
        return reply

    def _end(
        self, key: Key, status: str, reason: int | None, meme_id: str | None
    ) -> list[tuple[int, str]]:
        """Reference: a charged request ends; return the waiters that must be answered."""
        request = self.requests[key]
        waiters = request.waiters
        request.status, request.reason, request.meme_id, request.waiters = (
            status,
            reason,
            meme_id,
            [],
        )
        return waiters

    # --- rules ------------------------------------------------------------------------

    @initialize(
        c0_tokens=st.integers(min_value=0, max_value=4),
        c1_tokens=st.integers(min_value=0, max_value=4),
    )
    def open_two_accounts(self, c0_tokens: int, c1_tokens: int) -> None:
        # Two clients exist from the start so most steps reach the charging paths;
        # c2 stays unknown until a step registers it.
        self.now_ms = 1_000
        for client_id, tokens in (("c0", c0_tokens), ("c1", c1_tokens)):
            self.register_client(client_id)
            if tokens:
                self.purchase_tokens(client_id, "p-initial", tokens)

    @rule(ms=st.integers(min_value=1, max_value=4))
    def time_passes(self, ms: int) -> None:
        self.now_ms += ms

    @rule(client_id=st.sampled_from(CLIENTS))
    def register_client(self, client_id: str) -> None:
        reply_to = self._next_reply_to()
        event = ClientRegistered(
            **self._envelope(client_id), api_key_sha256=API_KEY_SHA256, reply_to=reply_to
        )
        decision = self._handle(event)

        reply = self._only_reply(decision, reply_to, event.event_id)
        assert reply.outcome == "registered"
        if client_id in self.clients:  # idempotent: nothing new
            note_path("register: again")
            assert decision.entries == ()
            assert reply.balance == self.clients[client_id].balance
            return
        (opened,) = decision.entries
        assert isinstance(opened, AccountOpened)
        assert (opened.seq, opened.balance_after) == (1, 0)
        assert reply.balance == 0
        self.clients[client_id] = ClientModel()

    @rule(
        client_id=st.sampled_from(CLIENTS),
        purchase_id=st.sampled_from(PURCHASE_IDS),
        tokens=st.integers(min_value=1, max_value=3),
    )
    def purchase_tokens(self, client_id: str, purchase_id: str, tokens: int) -> None:
        reply_to = self._next_reply_to()
        event = TokensPurchased(
            **self._envelope(client_id), purchase_id=purchase_id, tokens=tokens, reply_to=reply_to
        )
        decision = self._handle(event)

        reply = self._only_reply(decision, reply_to, event.event_id)
        client = self.clients.get(client_id)
        if client is None:
            note_path("purchase: unknown client")
            assert decision.entries == ()
            assert (reply.outcome, reply.reason) == ("purchase_rejected", PURCHASE_UNKNOWN_CLIENT)
            return
        seen_tokens = client.purchases.get(purchase_id)
        if seen_tokens is not None:
            assert decision.entries == ()
            note_path(f"purchase: repeated, same amount {seen_tokens == tokens}")
            if seen_tokens == tokens:
                assert (reply.outcome, reply.balance) == ("credited", client.balance)
                assert isinstance(reply.entry, TokensCredited)
                assert (reply.entry.purchase_id, reply.entry.tokens) == (purchase_id, tokens)
            else:
                assert (reply.outcome, reply.reason) == ("purchase_rejected", PURCHASE_CONFLICT)
            return
        note_path("purchase: credited")
        credited = self._one_entry(decision, client_id, TokensCredited)
        client.balance += tokens
        client.credited += tokens
        client.purchases[purchase_id] = tokens
        assert (credited.tokens, credited.balance_after) == (tokens, client.balance)
        assert (reply.outcome, reply.balance) == ("credited", client.balance)

    @rule(
        client_id=st.sampled_from(CLIENTS),
        active=st.booleans(),
        until_after_ms=st.none() | st.just(0) | st.integers(min_value=-2, max_value=8),
    )
    def change_subscription(self, client_id: str, active: bool, until_after_ms: int | None) -> None:
        until_ms = None if until_after_ms is None else max(0, self.now_ms + until_after_ms)
        reply_to = self._next_reply_to()
        event = SubscriptionRequested(
            **self._envelope(client_id), active=active, until_ms=until_ms, reply_to=reply_to
        )
        decision = self._handle(event)

        reply = self._only_reply(decision, reply_to, event.event_id)
        client = self._known_or_not_found(client_id, decision, reply)
        if client is None:
            return
        changed = self._one_entry(decision, client_id, SubscriptionChanged)
        client.ai_active = active
        client.ai_until_ms = until_ms if active else None
        assert (changed.active, changed.until_ms) == (client.ai_active, client.ai_until_ms)
        assert changed.balance_after == client.balance
        assert reply.outcome == "subscription"

    @rule(
        client_id=st.sampled_from(CLIENTS),
        key=st.sampled_from(ROTATED_KEYS),
        grace_ms=st.sampled_from((0, 3, 50)),
    )
    def rotate_api_key(self, client_id: str, key: str, grace_ms: int) -> None:
        reply_to = self._next_reply_to()
        event = ApiKeyRotationRequested(
            **self._envelope(client_id),
            api_key_sha256=key,
            old_key_valid_ms=grace_ms,
            reply_to=reply_to,
        )
        decision = self._handle(event)

        reply = self._only_reply(decision, reply_to, event.event_id)
        client = self._known_or_not_found(client_id, decision, reply)
        if client is None:
            return
        rotated = self._one_entry(decision, client_id, ApiKeyRotated)
        # The model's grace: the replaced key until now + grace (or a later end it had
        # from before), earlier ones until their own end; none without a grace; never the
        # new key; the four that end last.
        now_ms = event.occurred_at_ms
        graced = {k: until for k, until in client.replaced_keys.items() if until > now_ms}
        if grace_ms:
            old = client.api_key_sha256
            graced[old] = max(graced.get(old, 0), now_ms + grace_ms)
        graced.pop(key, None)
        ends_last = sorted(graced.items(), key=lambda item: item[1])[-4:]
        client.replaced_keys = dict(ends_last) if grace_ms else {}
        client.api_key_sha256 = key
        assert {k.api_key_sha256: k.valid_until_ms for k in rotated.replaced_keys} == (
            client.replaced_keys
        )
        assert (rotated.api_key_sha256, rotated.balance_after) == (key, client.balance)
        assert (reply.outcome, reply.entry) == ("key_rotated", rotated)

    @rule(
        data=st.data(),
        repeat=st.booleans(),
        other_params=st.booleans(),
        deadline_after_ms=st.integers(min_value=0, max_value=8),
    )
    def request_meme(
        self,
        data: st.DataObject,
        repeat: bool,
        other_params: bool,
        deadline_after_ms: int,
    ) -> None:
        if repeat and self.requests:
            owner, request_id = self._pick_by_status(data)
            # Half the time the owner repeats its id, else any client (often another
            # one) uses it: for another client that is simply a request of its own.
            client_id = data.draw(st.sampled_from((owner, *CLIENTS)), label="client_id")
            seen_fingerprint = self.requests[owner, request_id].fingerprint
            fingerprint = seen_fingerprint
            if other_params:
                fingerprint = next(f for f in FINGERPRINTS if f != seen_fingerprint)
        else:
            client_id = data.draw(st.sampled_from(CLIENTS), label="client_id")
            request_id = f"r{self._ids + 1}"  # never used before: ids only grow
            fingerprint = FINGERPRINTS[other_params]
        self._request(client_id, request_id, fingerprint, deadline_after_ms)

    @precondition(lambda self: any(r.status == "charged" for r in self.requests.values()))
    @rule(data=st.data())
    def client_retries_while_in_flight(self, data: st.DataObject) -> None:
        # The common production retry: same key, same parameters, no answer yet. Its
        # own rule, so requests with several waiters reach an outcome often.
        in_flight = sorted(key for key, r in self.requests.items() if r.status == "charged")
        client_id, request_id = data.draw(st.sampled_from(in_flight), label="request")
        request = self.requests[client_id, request_id]
        self._request(client_id, request_id, request.fingerprint, deadline_after_ms=5)

    @precondition(lambda self: self.sent_requests)
    @rule(data=st.data())
    def request_redelivered(self, data: st.DataObject) -> None:
        """The very same input again (same event id), as after a consumer restart.

        Mostly one of a request still in flight (the case where it could become a
        duplicate waiter), sometimes any input sent so far."""
        in_flight = [
            event
            for event in self.sent_requests
            if (r := self.requests.get((event.client_id, event.request_id))) is not None
            and r.status == "charged"
        ]
        pool = self.sent_requests
        if in_flight and data.draw(st.integers(0, 3), label="pick in flight") > 0:
            pool = in_flight
        self._send_request(data.draw(st.sampled_from(pool), label="redelivered"))

    def _request(
        self, client_id: str, request_id: str, fingerprint: str, deadline_after_ms: int
    ) -> None:
        event = MemeRequested(
            **self._envelope(client_id),
            request_id=request_id,
            fingerprint=fingerprint,
            lat=12.5,
            lon=-45.25,
            query="cats",
            deadline_ms=self.now_ms + deadline_after_ms,
            reply_to=self._next_reply_to(),
        )
        self.sent_requests.append(event)
        self._send_request(event)

    def _send_request(self, event: MemeRequested) -> None:
        decision = self._handle(event)

        client_id, request_id, reply_to = event.client_id, event.request_id, event.reply_to
        key = (client_id, request_id)
        client = self.clients.get(client_id)
        seen = self.requests.get(key)
        # Checks in the documented order; the first that applies decides.
        if client is None:
            note_path("request: unknown client")
            assert decision.entries == () and decision.requests == ()
            reply = self._only_reply(decision, reply_to, event.event_id)
            assert (reply.outcome, reply.reason) == ("rejected", UNKNOWN_CLIENT)
            return
        if seen is not None and seen.fingerprint != event.fingerprint:
            note_path("request: conflict")
            assert decision.entries == () and decision.requests == ()
            reply = self._only_reply(decision, reply_to, event.event_id)
            assert (reply.outcome, reply.reason) == ("rejected", IDEMPOTENCY_CONFLICT)
            return
        if seen is not None:
            note_path(f"request: repeat after {seen.status}")
            self._check_repeat(decision, seen, reply_to, event.event_id, client.balance)
            return
        if any(rid == request_id for _, rid in self.requests):
            note_path("request: id already used by another client")
        if client.balance < PRICE:
            note_path("request: insufficient tokens")
            rejected = self._one_entry(decision, client_id, MemeRejected)
            client.requested += 1
            assert (rejected.reason, rejected.balance_after) == (INSUFFICIENT_TOKENS, 0)
            assert rejected.request_id == request_id
            assert decision.approved is None
            reply = self._only_reply(decision, reply_to, event.event_id)
            assert (reply.outcome, reply.reason, reply.balance) == (
                "rejected",
                INSUFFICIENT_TOKENS,
                0,
            )
            self.requests[key] = RequestModel(
                client_id, event.fingerprint, "rejected", None, 0, [], INSUFFICIENT_TOKENS
            )
            return
        # The kind is decided at the request's own time (a redelivery keeps its time).
        kind = "ai" if client.ai_at(event.occurred_at_ms) else "standard"
        note_path(f"request: charged {kind}")
        charged = self._one_entry(decision, client_id, TokensCharged)
        client.balance -= PRICE
        client.charged += PRICE
        client.requested += 1
        assert (charged.request_id, charged.tokens, charged.kind) == (request_id, PRICE, kind)
        assert charged.balance_after == client.balance
        assert decision.replies == ()  # the answer comes with the outcome
        approved = decision.approved
        assert approved is not None
        assert (approved.client_id, approved.request_id, approved.kind, approved.deadline_ms) == (
            client_id,
            request_id,
            kind,
            event.deadline_ms,
        )
        self.requests[key] = RequestModel(
            client_id,
            event.fingerprint,
            "charged",
            kind,
            event.deadline_ms,
            [(reply_to, event.event_id)],
        )

    def _check_repeat(
        self,
        decision: Decision,
        seen: RequestModel,
        reply_to: int,
        correlation_id: str,
        balance: int,
    ) -> None:
        """Same client, same request id, same parameters: never charged again."""
        assert decision.entries == () and decision.approved is None
        if seen.status == "charged":
            if any(c == correlation_id for _, c in seen.waiters):
                note_path("request: redelivered while waiting")
                assert decision == Decision()  # already a waiter: no duplicate reply
                return
            if len(seen.waiters) >= MAX_WAITERS:
                note_path("request: waiters full")
                # bounded: the extra retry is not recorded, and is told "in progress"
                reply = self._only_reply(decision, reply_to, correlation_id)
                assert reply.outcome == "in_progress"
                assert decision.requests == () and decision.entries == ()
                return
            assert decision.replies == ()
            seen.waiters.append((reply_to, correlation_id))
            (record,) = decision.requests
            waiters = [(w.reply_to, w.correlation_id) for w in record.waiters]
            assert waiters == seen.waiters
            return
        reply = self._only_reply(decision, reply_to, correlation_id)
        assert reply.balance == balance
        if seen.status == "delivered":
            assert reply.outcome == "delivered"
            assert isinstance(reply.entry, MemeDelivered)
            assert (reply.entry.client_id, reply.entry.meme_id) == (seen.client_id, seen.meme_id)
            assert reply.caption == seen.caption
        else:
            assert (reply.outcome, reply.reason) == (seen.status, seen.reason)

    def _pick_by_status(self, data: st.DataObject) -> Key:
        """A known request, each status equally likely (rejected ones pile up)."""
        by_status: dict[str, list[Key]] = defaultdict(list)
        for key, request in sorted(self.requests.items()):
            by_status[request.status].append(key)
        status = data.draw(st.sampled_from(sorted(by_status)), label="status")
        return data.draw(st.sampled_from(by_status[status]), label="request")

    def _pick_request(self, data: st.DataObject) -> Key:
        return data.draw(st.sampled_from(sorted(self.requests)), label="request")

    def _pick_outcome_request(self, data: st.DataObject) -> Key:
        """Mostly a request in flight (the interesting case), sometimes any request."""
        in_flight = sorted(key for key, r in self.requests.items() if r.status == "charged")
        if in_flight and data.draw(st.integers(0, 3), label="pick in flight") > 0:
            return data.draw(st.sampled_from(in_flight), label="request")
        return self._pick_request(data)

    def _outcome_client(self, data: st.DataObject, owner: str) -> str:
        # Mostly the owner; sometimes another client, whose outcome must end only that
        # client's own request of the same id, if it has one.
        return data.draw(st.sampled_from((owner, owner, owner, *CLIENTS)), label="client_id")

    def _is_open(self, key: Key) -> bool:
        request = self.requests.get(key)
        return request is not None and request.status == "charged"

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def generator_succeeds(self, data: st.DataObject) -> None:
        owner, request_id = self._pick_outcome_request(data)
        client_id = self._outcome_client(data, owner)
        key = (client_id, request_id)
        kind = self.requests[owner, request_id].kind or "standard"
        event = MemeGenerated(
            **self._envelope(client_id),
            request_id=request_id,
            meme_id=f"m-{self._ids}",
            kind=kind,
            template="distracted",
            caption="a / b",
            image_key=f"img/{request_id}",
        )
        decision = self._handle(event)

        if not self._is_open(key):
            note_path("generated: ignored")
            assert decision == Decision()  # duplicate, late, foreign or rejected: ignored
            return
        if event.occurred_at_ms > self.requests[key].deadline_ms:
            note_path("generated: after the deadline, refunded")
            self._check_refund(decision, key, DEADLINE_EXPIRED)
            return
        note_path(f"generated: delivered to {len(self.requests[key].waiters)} waiters")
        if client_id != owner:
            note_path("generated: for the same id of another client")
        delivered = self._one_entry(decision, client_id, MemeDelivered)
        client = self.clients[client_id]
        client.delivered += 1
        assert (delivered.request_id, delivered.meme_id, delivered.kind) == (
            request_id,
            event.meme_id,
            kind,
        )
        assert delivered.balance_after == client.balance
        assert delivered.caption is None  # never in the ledger
        waiters = self._end(key, "delivered", None, event.meme_id)
        self.requests[key].caption = event.caption
        self._check_final_replies(decision, waiters, "delivered", None, client.balance)
        assert all(reply.caption == event.caption for _, reply in decision.replies)

    @rule(client_id=st.sampled_from(CLIENTS))
    def erase_personal_data(self, client_id: str) -> None:
        reply_to = self._next_reply_to()
        event = ErasureRequested(**self._envelope(client_id), reply_to=reply_to)
        decision = self._handle(event)

        reply = self._only_reply(decision, reply_to, event.event_id)
        client = self.clients.get(client_id)
        if client is None:
            note_path("erasure: unknown client")
            assert reply.outcome == "not_found" and decision.entries == ()
            return
        mine = [r for (owner, _), r in sorted(self.requests.items()) if owner == client_id]
        with_caption = [r for r in mine if r.caption is not None]
        erasure = reply.erasure
        assert reply.outcome == "erased" and erasure is not None
        assert erasure.next_after_request_id is None  # one batch holds a small history
        assert erasure.requests_seen == len(mine)
        assert erasure.requests_erased == len(with_caption)
        assert erasure.in_flight == sum(r.status == "charged" for r in mine)
        assert len(erasure.image_keys) == sum(r.status == "delivered" for r in mine)
        assert reply.balance == client.balance
        if with_caption:
            note_path("erasure: captions erased")
            erased = self._one_entry(decision, client_id, PersonalDataErased)
            assert (erased.balance_after, erased.requests_erased) == (
                client.balance,
                len(with_caption),
            )
        else:
            note_path("erasure: nothing to erase")
            assert decision.entries == ()
        for request in with_caption:
            request.caption = None
        assert all(r.caption is None for r in self.ledger.state.requests_of(client_id))

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def generator_fails(self, data: st.DataObject) -> None:
        owner, request_id = self._pick_outcome_request(data)
        client_id = self._outcome_client(data, owner)
        event = MemeFailed(
            **self._envelope(client_id), request_id=request_id, kind="standard", error="boom"
        )
        decision = self._handle(event)
        key = (client_id, request_id)
        if self._is_open(key) and event.occurred_at_ms > self.requests[key].deadline_ms:
            note_path("failed: after the deadline, refunded as expired")
            self._check_refund(decision, key, DEADLINE_EXPIRED)
            return
        self._check_refund(decision, key, GENERATOR_FAILED)

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def deadline_passes(self, data: st.DataObject) -> None:
        owner, request_id = self._pick_outcome_request(data)
        client_id = self._outcome_client(data, owner)
        # The timer of the picked request fires at its deadline, never before it. For
        # another client's request of the same id that may still be early.
        self.now_ms = max(self.now_ms, self.requests[owner, request_id].deadline_ms)
        self._expire((client_id, request_id), self.now_ms)

    @precondition(lambda self: any(r.status == "charged" for r in self.requests.values()))
    @rule(data=st.data(), early_by_ms=st.integers(min_value=1, max_value=3))
    def timer_fires_early(self, data: st.DataObject, early_by_ms: int) -> None:
        # A timer before the deadline (skew, a rebuilt heap): it must change nothing.
        # Time itself does not move back; only this timer's now_ms is early.
        in_flight = sorted(key for key, r in self.requests.items() if r.status == "charged")
        key = data.draw(st.sampled_from(in_flight), label="request")
        self._expire(key, self.requests[key].deadline_ms - early_by_ms)

    def _expire(self, key: Key, now_ms: int) -> None:
        client_id, request_id = key
        decision = self._handle(
            Expire(client_id=client_id, request_id=request_id, region=REGION, now_ms=now_ms)
        )
        if self._is_open(key) and now_ms < self.requests[key].deadline_ms:
            note_path("expire: early, ignored")
            assert decision == Decision()
            return
        self._check_refund(decision, key, DEADLINE_EXPIRED)

    @precondition(
        lambda self: any(r.status in ("delivered", "refunded") for r in self.requests.values())
    )
    @rule(data=st.data(), outcome=st.sampled_from(("generated", "failed", "expired")))
    def outcome_arrives_again(self, data: st.DataObject, outcome: str) -> None:
        ended = sorted(
            key for key, r in self.requests.items() if r.status in ("delivered", "refunded")
        )
        client_id, request_id = data.draw(st.sampled_from(ended), label="request")
        event: InputEvent | Expire
        if outcome == "generated":
            event = MemeGenerated(
                **self._envelope(client_id),
                request_id=request_id,
                meme_id="m-again",
                kind="standard",
                template="t",
                caption="c",
                image_key="k",
            )
        elif outcome == "failed":
            event = MemeFailed(
                **self._envelope(client_id), request_id=request_id, kind="ai", error="late"
            )
        else:
            event = Expire(
                client_id=client_id, request_id=request_id, region=REGION, now_ms=self.now_ms
            )

        assert self._handle(event) == Decision()

    @rule(client_id=st.sampled_from(CLIENTS))
    def query_account(self, client_id: str) -> None:
        reply_to = self._next_reply_to()
        event = AccountQueried(**self._envelope(client_id), reply_to=reply_to)
        decision = self._handle(event)

        assert decision.entries == () and decision.account is None
        reply = self._only_reply(decision, reply_to, event.event_id)
        client = self.clients.get(client_id)
        if client is None:
            assert reply.outcome == "not_found"
            return
        assert reply.outcome == "account" and reply.account is not None
        view = reply.account
        assert (view.balance, view.seq, view.tokens_credited) == (
            client.balance,
            client.seq,
            client.credited,
        )
        assert (view.tokens_charged, view.tokens_refunded) == (client.charged, client.refunded)
        assert (view.memes_requested, view.memes_delivered) == (client.requested, client.delivered)
        # Active as read at the query's time: switched on, and not past its end.
        served = client.ai_at(event.occurred_at_ms)
        assert (view.ai_active, view.ai_until_ms) == (served, client.ai_until_ms)

    @precondition(lambda self: self.requests)
    @rule(data=st.data(), client_id=st.sampled_from(CLIENTS))
    def query_request(self, data: st.DataObject, client_id: str) -> None:
        owner, request_id = self._pick_request(data)
        reply_to = self._next_reply_to()
        event = RequestQueried(
            **self._envelope(client_id), request_id=request_id, reply_to=reply_to
        )
        decision = self._handle(event)

        assert decision.entries == () and decision.requests == ()
        reply = self._only_reply(decision, reply_to, event.event_id)
        request = self.requests.get((client_id, request_id))
        if request is None:
            # Another client's id: "not_found", so a client learns nothing of it.
            note_path(f"query request: not found, another client's {client_id != owner}")
            assert (reply.outcome, reply.request) == ("not_found", None)
            return
        note_path(f"query request: own, picked via another client {client_id != owner}")
        assert reply.outcome == "request" and reply.request is not None
        assert (reply.request.request_id, reply.request.status, reply.request.kind) == (
            request_id,
            request.status,
            request.kind,
        )
        meme_id = reply.request.meme.meme_id if reply.request.meme is not None else None
        assert meme_id == request.meme_id

    def _check_refund(self, decision: Decision, key: Key, reason: int) -> None:
        client_id, request_id = key
        if not self._is_open(key):
            note_path(f"refund {reason}: ignored")
            assert decision == Decision()
            return
        note_path(f"refund {reason}: refunded")
        refunded = self._one_entry(decision, client_id, TokensRefunded)
        client = self.clients[client_id]
        client.balance += PRICE
        client.refunded += PRICE
        assert (refunded.request_id, refunded.tokens, refunded.reason) == (
            request_id,
            PRICE,
            reason,
        )
        assert refunded.balance_after == client.balance
        waiters = self._end(key, "refunded", reason, None)
        self._check_final_replies(decision, waiters, "refunded", reason, client.balance)

    @staticmethod
    def _check_final_replies(
        decision: Decision,
        waiters: list[tuple[int, str]],
        outcome: str,
        reason: int | None,
        balance: int,
    ) -> None:
        """Every waiter, in arrival order, gets the one final outcome, exactly once."""
        assert [(to, r.correlation_id) for to, r in decision.replies] == waiters
        assert len({c for _, c in waiters}) == len(waiters), waiters
        for _, reply in decision.replies:
            assert (reply.outcome, reply.reason, reply.balance) == (outcome, reason, balance)
            assert reply.entry == decision.entries[0]

    # --- invariants -------------------------------------------------------------------

    def _accounts(self) -> dict[str, Account]:
        accounts = {}
        for client_id in CLIENTS:
            account = self.ledger.state.account(client_id)
            if account is not None:
                accounts[client_id] = account
        return accounts

    def _entries_by_client(self) -> dict[str, list[LedgerEntryUnion]]:
        by_client: dict[str, list[LedgerEntryUnion]] = defaultdict(list)
        for entry in self.ledger.entries:
            by_client[entry.client_id].append(entry)
        return by_client

    @invariant()
    def no_negative_balance(self) -> None:
        for client_id, account in self._accounts().items():
            assert account.balance >= 0, (client_id, account.balance)

    @invariant()
    def ledger_agrees_with_reference_model(self) -> None:
        accounts = self._accounts()
        assert set(accounts) == set(self.clients)
        for client_id, model in self.clients.items():
            account = accounts[client_id]
            assert (account.balance, account.seq) == (model.balance, model.seq), client_id
            assert account.api_key_sha256 == model.api_key_sha256, client_id
        for (client_id, request_id), request in self.requests.items():
            record = self.ledger.state.request(client_id, request_id)
            assert record is not None, (client_id, request_id)
            assert (record.client_id, record.request_id, record.status, record.kind) == (
                request.client_id,
                request_id,
                request.status,
                request.kind,
            )
            waiters = [(w.reply_to, w.correlation_id) for w in record.waiters]
            assert waiters == request.waiters, (client_id, request_id)

    @invariant()
    def pending_index_is_the_requests_in_flight(self) -> None:
        """The timers' index: every charged request, under its client, with its deadline."""
        pending = [
            parse_pending(key, value)
            for key, value in self.ledger.records.items()
            if key.startswith(PENDING_PREFIX)
        ]
        expected = [
            (client_id, request_id, model.deadline_ms)
            for (client_id, request_id), model in self.requests.items()
            if model.status == "charged"
        ]
        assert sorted(pending) == sorted(expected)

    @invariant()
    def one_request_id_charges_at_most_once(self) -> None:
        # Per client: the same id used by two clients is two requests, each charged once.
        charges = Counter(
            (e.client_id, e.request_id) for e in self.ledger.entries if e.type == "TokensCharged"
        )
        assert all(n == 1 for n in charges.values()), charges.most_common(3)

    @invariant()
    def each_request_has_at_most_one_final_outcome(self) -> None:
        charged = {
            (e.client_id, e.request_id) for e in self.ledger.entries if e.type == "TokensCharged"
        }
        finals = Counter(
            (e.client_id, e.request_id)
            for e in self.ledger.entries
            if e.type in ("MemeDelivered", "TokensRefunded")
        )
        assert all(n == 1 for n in finals.values()), finals.most_common(3)
        assert set(finals) <= charged, "an outcome for a request that was never charged"

    @invariant()
    def output_ids_are_unique(self) -> None:
        """Entry and work ids derive from distinct inputs, so no two outputs share one."""
        ids = [e.event_id for e in self.ledger.entries] + [a.event_id for a in self.approved]
        assert len(set(ids)) == len(ids), Counter(ids).most_common(3)

    @invariant()
    def conservation_per_client(self) -> None:
        """credited - charged + refunded == balance, summed from the ledger's entries."""
        accounts = self._accounts()
        for client_id, entries in self._entries_by_client().items():
            total = 0
            for entry in entries:
                if entry.type in ("TokensCredited", "TokensRefunded"):
                    total += entry.tokens
                elif entry.type == "TokensCharged":
                    total -= entry.tokens
            assert total == accounts[client_id].balance, client_id

    @invariant()
    def charges_minus_refunds_is_delivered_plus_in_flight(self) -> None:
        in_flight: Counter[str] = Counter()
        for (client_id, request_id), _ in self.requests.items():
            record = self.ledger.state.request(client_id, request_id)
            if record is not None and record.status == "charged":
                in_flight[record.client_id] += 1
        for client_id, entries in self._entries_by_client().items():
            kinds = Counter(e.type for e in entries)
            assert (
                kinds["TokensCharged"] - kinds["TokensRefunded"]
                == kinds["MemeDelivered"] + in_flight[client_id]
            ), (client_id, kinds, in_flight[client_id])

    @invariant()
    def replaying_entries_reproduces_every_account(self) -> None:
        replayed: dict[str, Account] = {}
        for entry in self.ledger.entries:
            replayed[entry.client_id] = evolve(replayed.get(entry.client_id), entry)
        live = self._accounts()
        assert set(replayed) == set(live)
        for client_id, account in live.items():
            assert replayed[client_id] == account, client_id

    @invariant()
    def redeciding_the_ledger_at_list_price_reproduces_it(self) -> None:
        """What-if pricing rests on this: the inputs read back from the entries, decided
        again in order, give the same entries. Ids aside (the inputs' ids differ), and
        erasures aside (no price changes them, so they are not re-decided, and the seqs
        after one move down)."""
        again = MemoryLedger()
        recorded = [e for e in self.ledger.entries if not isinstance(e, PersonalDataErased)]
        for entry in recorded:
            event = input_of(entry)
            assert event is not None, entry
            again.handle(event)

        def shape(e: LedgerEntryUnion) -> tuple[object, ...]:
            return (e.type, e.client_id, e.balance_after, getattr(e, "tokens", None))

        assert [shape(e) for e in again.entries] == [shape(e) for e in recorded]

    @invariant()
    def entries_have_gapless_seq_per_client(self) -> None:
        for client_id, entries in self._entries_by_client().items():
            assert [e.seq for e in entries] == list(range(1, len(entries) + 1)), client_id


TestLedgerModel = LedgerMachine.TestCase
TestLedgerModel.settings = MACHINE_SETTINGS


# --- determinism ----------------------------------------------------------------------

# One step of a random history: (what, client index, id index, amount, flag, time step).
steps = st.tuples(
    st.sampled_from(
        ("register", "buy", "subscribe", "request", "generated", "failed", "expire", "query")
    ),
    st.integers(min_value=0, max_value=len(CLIENTS) - 1),
    st.integers(min_value=0, max_value=5),
    st.integers(min_value=1, max_value=3),
    st.booleans(),
    st.integers(min_value=0, max_value=60),
)


def history(raw: list[tuple[str, int, int, int, bool, int]]) -> list[InputEvent | Expire]:
    """Turn drawn steps into inputs; ids and times derive only from the steps."""
    now_ms = 0
    events: list[InputEvent | Expire] = []
    for i, (what, client_index, id_index, amount, flag, step_ms) in enumerate(raw):
        now_ms += step_ms
        envelope = {
            "event_id": f"e{i}",
            "client_id": CLIENTS[client_index],
            "region": REGION,
            "occurred_at_ms": now_ms,
        }
        request_id = f"r{id_index}"
        match what:
            case "register":
                events.append(
                    ClientRegistered(**envelope, api_key_sha256=API_KEY_SHA256, reply_to=0)
                )
            case "buy":
                events.append(
                    TokensPurchased(
                        **envelope, purchase_id=f"p{id_index}", tokens=amount, reply_to=0
                    )
                )
            case "subscribe":
                until_ms = now_ms + 20 * amount if id_index % 2 else None
                events.append(
                    SubscriptionRequested(**envelope, active=flag, until_ms=until_ms, reply_to=0)
                )
            case "request":
                events.append(
                    MemeRequested(
                        **envelope,
                        request_id=request_id,
                        fingerprint=FINGERPRINTS[flag],
                        lat=1.0,
                        lon=2.0,
                        query="q",
                        deadline_ms=now_ms + 50,
                        reply_to=amount,
                    )
                )
            case "generated":
                events.append(
                    MemeGenerated(
                        **envelope,
                        request_id=request_id,
                        meme_id=f"m{i}",
                        kind="ai" if flag else "standard",
                        template="t",
                        caption="c",
                        image_key="k",
                    )
                )
            case "failed":
                events.append(
                    MemeFailed(**envelope, request_id=request_id, kind="standard", error="x")
                )
            case "expire":
                events.append(
                    Expire(
                        client_id=CLIENTS[client_index],
                        request_id=request_id,
                        region=REGION,
                        now_ms=now_ms,
                    )
                )
            case _:
                events.append(
                    RequestQueried(**envelope, request_id=request_id, reply_to=0)
                    if flag
                    else AccountQueried(**envelope, reply_to=0)
                )
    return events


@settings(max_examples=100, deadline=None, print_blob=True)
@given(raw=st.lists(steps, max_size=60))
def test_same_history_on_two_fresh_ledgers_gives_identical_entries_and_records(
    raw: list[tuple[str, int, int, int, bool, int]],
) -> None:
    """Scenario: the live processor and a replay fold the same inputs.
    We expect: the same decisions, the same entries (ids included) and the same records,
    byte for byte: the fold depends on nothing but its inputs. And since the inputs'
    ids are distinct, so are the ids of every entry and every work item."""
    first, second = MemoryLedger(), MemoryLedger()

    first_decisions = [first.handle(event) for event in history(raw)]
    second_decisions = [second.handle(event) for event in history(raw)]

    assert first_decisions == second_decisions
    assert [e.model_dump() for e in first.entries] == [e.model_dump() for e in second.entries]
    assert first.records == second.records
    ids = [e.event_id for e in first.entries]
    ids += [d.approved.event_id for d in first_decisions if d.approved is not None]
    assert len(set(ids)) == len(ids), Counter(ids).most_common(3)


# Requests and their ends, for funded clients, time moving on.
# Two clients and two ids each, so that outcomes and retries often meet their request.
request_steps = st.tuples(
    st.sampled_from(("request", "request", "generated", "failed", "expire", "query")),
    st.integers(min_value=0, max_value=1),
    st.integers(min_value=0, max_value=1),
    st.just(1),
    st.booleans(),
    st.integers(min_value=0, max_value=40),
)


@settings(max_examples=100, deadline=None, print_blob=True)
@given(
    raw=st.lists(request_steps, min_size=20, max_size=80),
    forget_after=st.lists(st.booleans(), min_size=80, max_size=80),
)
def test_forgetting_ended_requests_changes_no_decision(
    raw: list[tuple[str, int, int, int, bool, int]], forget_after: list[bool]
) -> None:
    """Scenario: a short memory (10 ms past a deadline), and the processor's ``Forget``
    timer dropping the records it covers after some inputs, at that input's time.
    We expect: every input decided exactly as on a ledger that never drops a record (the
    fold treats a record as gone from its time on, dropped or not); and what is dropped
    is only what no input can see again."""
    remember_ms = 10
    forgetting = MemoryLedger(remember_ms=remember_ms)
    keeping = MemoryLedger(remember_ms=remember_ms)
    # Every client registered with tokens first, so that requests are charged and end.
    funded = [("register", c, 0, 1, False, 0) for c in range(len(CLIENTS))]
    funded += [("buy", c, 0, 100, False, 0) for c in range(len(CLIENTS))]
    now_ms = 0
    for i, event in enumerate(history(funded + raw), start=-len(funded)):
        assert forgetting.handle(event) == keeping.handle(event), event
        now_ms = event.now_ms if isinstance(event, Expire) else event.occurred_at_ms
        if i >= 0 and forget_after[i]:  # as many flags as steps at most
            dropped = forgetting.handle(Forget(now_ms=now_ms, limit=2)).forgotten
            note_path(f"a Forget dropped records: {bool(dropped)}")

    kept = {k: v for k, v in keeping.records.items() if k.startswith(b"r/")}
    left = {k: v for k, v in forgetting.records.items() if k.startswith(b"r/")}
    assert left.items() <= kept.items()
    for key in kept.keys() - left.keys():
        assert decode_request(kept[key]).forgotten_at(now_ms, remember_ms), key
    # A forget without a limit that matters leaves no record the fold sees as gone.
    forgetting.handle(Forget(now_ms=now_ms, limit=len(raw) + 1))
    assert not any(
        decode_request(v).forgotten_at(now_ms, remember_ms)
        for k, v in forgetting.records.items()
        if k.startswith(b"r/")
    )
