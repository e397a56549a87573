"""Example-based tests of every rule in the ``ledger.fold`` docstring.

Each test is one short scenario driven through ``MemoryLedger`` (the fold plus a dict),
so the records a decision writes are read back by the next decision exactly as the
live processor would. Event ids come from a per-script counter, so two fresh scripts
that do the same things produce the same inputs: that is what the determinism test
relies on.
"""

from __future__ import annotations

import itertools

import msgspec
import pytest
from pydantic import TypeAdapter

from ledger.account_rules import MAX_REPLACED_KEYS
from ledger.fold import REMEMBER_MS, Decision, Expire, Forget, LedgerCorrupt, Pricing, evolve
from ledger.memory import MemoryLedger
from ledger.reconcile import gather, reconcile
from ledger.replay import Replay
from ledger.state import (
    ENDED_PREFIX,
    MAX_WAITERS,
    PENDING_PREFIX,
    Account,
    Forgotten,
    RequestRecord,
    decode_account,
    encode_record,
    ended_key,
    parse_pending,
    pending_key,
    request_key,
)
from schemas.events import (
    GENESIS_HASH,
    AccountOpened,
    AccountQueried,
    ApiKeyRotated,
    ApiKeyRotationRequested,
    ClientRegistered,
    ErasureRequested,
    Id,
    InputEvent,
    Kind,
    LedgerEntryUnion,
    MemeApproved,
    MemeDelivered,
    MemeFailed,
    MemeGenerated,
    MemeRejected,
    MemeRequested,
    PersonalDataErased,
    PurchaseRejectReason,
    RefundReason,
    RejectReason,
    Reply,
    RequestQueried,
    SubscriptionChanged,
    SubscriptionRequested,
    TokensCharged,
    TokensCredited,
    TokensPurchased,
    TokensRefunded,
    entry_hash,
)

REGION = "eu"
API_KEY_SHA256 = "ab" * 32
FINGERPRINT_A = "0123456789abcdef"
FINGERPRINT_B = "fedcba9876543210"
DEADLINE_AFTER_MS = 5_000
ID = TypeAdapter(Id)


class Script:
    """A ``MemoryLedger`` with one method per input, ids from a counter, time explicit.

    Every method returns the ``Decision`` so a test can check the entries, records and
    replies of that one step.
    """

    def __init__(self, pricing: Pricing | None = None, remember_ms: int = REMEMBER_MS) -> None:
        self.ledger = MemoryLedger(pricing or Pricing(), remember_ms=remember_ms)
        self._ids = itertools.count(1)
        self.last_event_id = ""
        self.last_input: InputEvent | None = None
        self.approved: list[MemeApproved] = []  # work sent to the generator pools

    def _event_id(self) -> str:
        self.last_event_id = f"e{next(self._ids)}"
        return self.last_event_id

    def _handle(self, event: InputEvent) -> Decision:
        self.last_input = event
        return self.redeliver(event)

    def redeliver(self, event: InputEvent) -> Decision:
        """The very same input again (same event id), as after a consumer restart."""
        decision = self.ledger.handle(event)
        if decision.approved is not None:
            self.approved.append(decision.approved)
        return decision

    def register(self, client: str = "c1", at_ms: int = 0) -> Decision:
        return self._handle(
            ClientRegistered(
                event_id=self._event_id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=at_ms,
                api_key_sha256=API_KEY_SHA256,
                reply_to=0,
            )
        )

    def buy(self, client: str, purchase_id: str, tokens: int, at_ms: int = 0) -> Decision:
        return self._handle(
            TokensPurchased(
                event_id=self._event_id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=at_ms,
                purchase_id=purchase_id,
                tokens=tokens,
                reply_to=1,
            )
        )

    def subscribe(
        self, client: str, active: bool, until_ms: int | None = None, at_ms: int = 0
    ) -> Decision:
        return self._handle(
            SubscriptionRequested(
                event_id=self._event_id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=at_ms,
                active=active,
                until_ms=until_ms,
                reply_to=2,
            )
        )

    def rotate_key(
        self, client: str, api_key_sha256: str, at_ms: int = 0, old_key_valid_ms: int = 0
    ) -> Decision:
        return self._handle(
            ApiKeyRotationRequested(
                event_id=self._event_id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=at_ms,
                api_key_sha256=api_key_sha256,
                old_key_valid_ms=old_key_valid_ms,
                reply_to=3,
            )
        )

    def request(
        self,
        client: str,
        request_id: str,
        at_ms: int = 0,
        fingerprint: str = FINGERPRINT_A,
        reply_to: int = 3,
    ) -> Decision:
        return self._handle(
            MemeRequested(
                event_id=self._event_id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=at_ms,
                request_id=request_id,
                fingerprint=fingerprint,
                lat=40.73061,
                lon=-73.935242,
                query="food",
                deadline_ms=at_ms + DEADLINE_AFTER_MS,
                reply_to=reply_to,
            )
        )

    def generated(
        self,
        client: str,
        request_id: str,
        kind: str = "standard",
        at_ms: int = 0,
        replied_to: str | None = None,
    ) -> Decision:
        return self._handle(
            MemeGenerated(
                event_id=self._event_id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=at_ms,
                request_id=request_id,
                meme_id=f"m-{request_id}",
                kind=kind,
                template="drake",
                caption="top / bottom",
                image_key=f"img/{request_id}.png",
                replied_to=replied_to,
            )
        )

    def failed(self, client: str, request_id: str, at_ms: int = 0) -> Decision:
        return self._handle(
            MemeFailed(
                event_id=self._event_id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=at_ms,
                request_id=request_id,
                kind="standard",
                error="renderer crashed",
            )
        )

    def expire(self, client: str, request_id: str, now_ms: int) -> Decision:
        return self.ledger.handle(
            Expire(client_id=client, request_id=request_id, region=REGION, now_ms=now_ms)
        )

    def forget(self, now_ms: int, limit: int = 100, since_ms: int = 0) -> Decision:
        return self.ledger.handle(Forget(now_ms=now_ms, limit=limit, since_ms=since_ms))

    def query_account(self, client: str) -> Decision:
        return self._handle(
            AccountQueried(
                event_id=self._event_id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=0,
                reply_to=4,
            )
        )

    def query_request(self, client: str, request_id: str, at_ms: int = 0) -> Decision:
        return self._handle(
            RequestQueried(
                event_id=self._event_id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=at_ms,
                request_id=request_id,
                reply_to=5,
            )
        )

    def account(self, client: str = "c1") -> Account:
        account = self.ledger.state.account(client)
        assert account is not None, f"no account for {client}"
        return account

    def erase(self, client: str, after_request_id: str = "") -> Decision:
        return self._handle(
            ErasureRequested(
                event_id=self._event_id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=0,
                after_request_id=after_request_id,
                reply_to=6,
            )
        )

    def record(self, request_id: str, client: str = "c1") -> RequestRecord:
        record = self.ledger.state.request(client, request_id)
        assert record is not None, f"no record for {request_id}"
        return record


def only_reply(decision: Decision) -> tuple[int, Reply]:
    assert len(decision.replies) == 1, decision.replies
    return decision.replies[0]


def charged_kind(decision: Decision) -> Kind:
    """The kind of the request's charge, the decision's first entry: the pool it goes to."""
    charged = decision.entries[0]
    assert isinstance(charged, TokensCharged), charged
    return charged.kind


def writes_nothing(decision: Decision) -> bool:
    """No entry, no record, no work: the decision only answers (or does nothing)."""
    return (
        decision.entries == ()
        and decision.account is None
        and decision.requests == ()
        and decision.purchase is None
        and decision.approved is None
        and decision.forgotten == ()
    )


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def funded(script: Script) -> Script:
    """Client c1 registered with 3 tokens (seq 1 AccountOpened, seq 2 TokensCredited)."""
    script.register("c1")
    script.buy("c1", "p1", tokens=3)
    return script


# --- registration ---------------------------------------------------------------------


def test_registration_opens_an_account_with_zero_balance(script: Script) -> None:
    decision = script.register("c1", at_ms=7)

    (opened,) = decision.entries
    assert isinstance(opened, AccountOpened)
    assert (opened.seq, opened.balance_after) == (1, 0)
    assert opened.api_key_sha256 == API_KEY_SHA256
    assert opened.occurred_at_ms == 7
    reply_to, reply = only_reply(decision)
    assert reply_to == 0
    assert reply.outcome == "registered"
    assert reply.correlation_id == script.last_event_id
    assert reply.balance == 0
    assert reply.entry == opened
    assert script.account("c1") == Account(
        client_id="c1",
        api_key_sha256=API_KEY_SHA256,
        balance=0,
        seq=1,
        last_hash=entry_hash(opened),
    )
    assert opened.prev_hash == GENESIS_HASH


def test_registering_twice_is_idempotent(script: Script) -> None:
    """Scenario: billing retries a registration after the client already bought tokens.
    We expect: no new entry, the account untouched, a "registered" reply with the
    current balance."""
    script.register("c1")
    script.buy("c1", "p1", tokens=4)
    before = script.account("c1")

    decision = script.register("c1")

    assert decision.entries == ()
    assert decision.account is None
    _, reply = only_reply(decision)
    assert reply.outcome == "registered"
    assert reply.balance == 4
    assert reply.account == before.view(0)  # the registration's time
    assert script.account("c1") == before


# --- purchase -------------------------------------------------------------------------


def test_purchase_credits_the_tokens(script: Script) -> None:
    script.register("c1")

    decision = script.buy("c1", "p1", tokens=5)

    (credited,) = decision.entries
    assert isinstance(credited, TokensCredited)
    assert (credited.seq, credited.balance_after) == (2, 5)
    assert (credited.purchase_id, credited.tokens) == ("p1", 5)
    reply_to, reply = only_reply(decision)
    assert (reply_to, reply.outcome, reply.balance, reply.entry) == (1, "credited", 5, credited)
    account = script.account("c1")
    assert (account.balance, account.tokens_credited, account.seq) == (5, 5, 2)


def test_repeated_purchase_id_with_same_amount_credits_once(script: Script) -> None:
    """Scenario: billing retries a purchase it is not sure was recorded.
    We expect: the first credit is returned again and nothing is credited twice."""
    script.register("c1")
    first = script.buy("c1", "p1", tokens=5)

    again = script.buy("c1", "p1", tokens=5)

    assert writes_nothing(again)
    _, reply = only_reply(again)
    assert reply.outcome == "credited"
    assert reply.entry == first.entries[0]
    assert reply.balance == 5
    assert script.account("c1").balance == 5
    assert script.account("c1").tokens_credited == 5


def test_repeated_purchase_id_with_other_amount_is_a_conflict(script: Script) -> None:
    script.register("c1")
    script.buy("c1", "p1", tokens=5)

    decision = script.buy("c1", "p1", tokens=6)

    assert writes_nothing(decision)
    _, reply = only_reply(decision)
    assert reply.outcome == "purchase_rejected"
    assert reply.reason == PurchaseRejectReason.PURCHASE_CONFLICT
    assert reply.balance == 5
    assert script.account("c1").balance == 5


def test_purchase_for_unknown_client_is_rejected_and_stores_nothing(script: Script) -> None:
    decision = script.buy("ghost", "p1", tokens=5)

    assert writes_nothing(decision)
    _, reply = only_reply(decision)
    assert reply.outcome == "purchase_rejected"
    assert reply.reason == PurchaseRejectReason.UNKNOWN_CLIENT
    assert script.ledger.records == {}


def test_purchase_ids_are_scoped_per_client(script: Script) -> None:
    # Billing's purchase ids are only unique per client (see ledger/state.py).
    script.register("c1")
    script.register("c2")
    script.buy("c1", "p1", tokens=5)

    decision = script.buy("c2", "p1", tokens=9)

    _, reply = only_reply(decision)
    assert reply.outcome == "credited"
    assert script.account("c2").balance == 9
    assert script.account("c1").balance == 5


# --- meme request: rejections ---------------------------------------------------------


def test_meme_request_from_unknown_client_is_rejected_with_reason_1(script: Script) -> None:
    decision = script.request("ghost", "r1")

    assert writes_nothing(decision)
    reply_to, reply = only_reply(decision)
    assert reply_to == 3
    assert reply.outcome == "rejected"
    assert reply.reason == RejectReason.UNKNOWN_CLIENT == 1
    assert script.ledger.records == {}


def test_meme_request_without_tokens_is_rejected_with_reason_3(script: Script) -> None:
    """Scenario: a registered client with no tokens asks for a meme.
    We expect: a MemeRejected entry (reason 3) that leaves the balance at 0, no work
    for a generator, and the rejection stored under the request id."""
    script.register("c1")

    decision = script.request("c1", "r1")

    (rejected,) = decision.entries
    assert isinstance(rejected, MemeRejected)
    assert rejected.reason == RejectReason.INSUFFICIENT_TOKENS == 3
    assert (rejected.seq, rejected.balance_after, rejected.request_id) == (2, 0, "r1")
    assert decision.approved is None
    _, reply = only_reply(decision)
    assert (reply.outcome, reply.reason, reply.balance, reply.entry) == (
        "rejected",
        3,
        0,
        rejected,
    )
    account = script.account("c1")
    assert (account.balance, account.memes_requested, account.tokens_charged) == (0, 1, 0)
    assert script.record("r1").status == "rejected"


# --- meme request: charge and kind ----------------------------------------------------


def test_meme_request_charges_one_token_and_approves_standard_work(funded: Script) -> None:
    decision = funded.request("c1", "r1", at_ms=100)

    (charged,) = decision.entries
    assert isinstance(charged, TokensCharged)
    assert (charged.seq, charged.balance_after) == (3, 2)
    assert (charged.request_id, charged.tokens, charged.kind) == ("r1", 1, "standard")
    approved = decision.approved
    assert approved is not None
    assert (approved.request_id, approved.kind, approved.client_id) == ("r1", "standard", "c1")
    assert (approved.lat, approved.lon, approved.query) == (40.73061, -73.935242, "food")
    assert approved.deadline_ms == 100 + DEADLINE_AFTER_MS
    # The API gets its answer with the outcome, not with the charge: the approval names
    # the waiting API and what the charge left, for a generator that makes it in time.
    assert decision.replies == ()
    assert (approved.reply_to, approved.correlation_id) == (3, funded.last_event_id)
    assert (approved.tokens, approved.balance_after) == (1, 2)
    record = funded.record("r1")
    assert (record.status, record.kind, len(record.waiters)) == ("charged", "standard", 1)
    account = funded.account("c1")
    assert (account.balance, account.tokens_charged, account.memes_requested) == (2, 1, 1)


def test_active_subscription_without_end_sends_work_to_the_ai_pool(funded: Script) -> None:
    decision = funded.subscribe("c1", active=True)
    (changed,) = decision.entries
    assert isinstance(changed, SubscriptionChanged)
    assert (changed.active, changed.until_ms, changed.balance_after) == (True, None, 3)

    decision = funded.request("c1", "r1", at_ms=10**12)

    assert charged_kind(decision) == "ai"
    assert decision.approved is not None and decision.approved.kind == "ai"


def test_subscription_with_end_is_ai_before_until_and_standard_from_until(
    funded: Script,
) -> None:
    """Scenario: Memes AI runs until t=1000.
    We expect: a request at t=999 is ai, one at exactly t=1000 (the end is exclusive)
    and one later are standard."""
    funded.subscribe("c1", active=True, until_ms=1_000)

    assert charged_kind(funded.request("c1", "r1", at_ms=999)) == "ai"
    assert charged_kind(funded.request("c1", "r2", at_ms=1_000)) == "standard"
    assert charged_kind(funded.request("c1", "r3", at_ms=5_000)) == "standard"


def test_cancelled_subscription_sends_work_to_the_standard_pool(funded: Script) -> None:
    funded.subscribe("c1", active=True, until_ms=10_000)

    decision = funded.subscribe("c1", active=False, until_ms=10_000)

    # Cancelling forgets the end time: it meant nothing once inactive.
    (changed,) = decision.entries
    assert isinstance(changed, SubscriptionChanged)
    assert (changed.active, changed.until_ms) == (False, None)
    assert charged_kind(funded.request("c1", "r1", at_ms=5)) == "standard"


def test_subscription_for_unknown_client_is_not_found(script: Script) -> None:
    decision = script.subscribe("ghost", active=True)

    assert writes_nothing(decision)
    assert only_reply(decision)[1].outcome == "not_found"


# --- the API key ----------------------------------------------------------------------


def test_a_rotated_key_is_the_accounts_key_and_moves_no_token(funded: Script) -> None:
    funded.subscribe("c1", active=True)
    before = funded.account("c1")
    new_key = "cd" * 32

    decision = funded.rotate_key("c1", new_key, at_ms=7)

    (rotated,) = decision.entries
    assert isinstance(rotated, ApiKeyRotated)
    assert (rotated.api_key_sha256, rotated.seq, rotated.balance_after) == (
        new_key,
        before.seq + 1,
        before.balance,
    )
    assert rotated.prev_hash == before.last_hash
    after = funded.account("c1")
    assert after.api_key_sha256 == new_key
    assert (after.balance, after.ai_active) == (before.balance, True)
    (_, reply) = only_reply(decision)
    assert (reply.outcome, reply.entry, reply.balance) == ("key_rotated", rotated, 3)
    assert charged_kind(funded.request("c1", "r1", at_ms=8)) == "ai"


def replaced(decision: Decision) -> list[tuple[str, int]]:
    (rotated,) = decision.entries
    assert isinstance(rotated, ApiKeyRotated)
    return [(key.api_key_sha256, key.valid_until_ms) for key in rotated.replaced_keys]


def test_a_rotation_with_a_grace_keeps_the_replaced_key_until_it_ends(funded: Script) -> None:
    """Scenario: billing rotates a key with an hour's grace, repeats the rotation (its
    answer was lost), then rotates once more after the hour.
    We expect: the first key works for the hour from the first rotation, the repeat
    does not end it (the key the client runs on), and once the hour is over only the
    key replaced last is kept."""
    first = funded.account("c1").api_key_sha256
    hour = 3_600_000

    once = funded.rotate_key("c1", "cd" * 32, at_ms=1_000, old_key_valid_ms=hour)
    again = funded.rotate_key("c1", "ef" * 32, at_ms=2_000, old_key_valid_ms=hour)
    later = funded.rotate_key("c1", "12" * 32, at_ms=1_000 + hour, old_key_valid_ms=60_000)

    assert replaced(once) == [(first, 1_000 + hour)]
    assert replaced(again) == [(first, 1_000 + hour), ("cd" * 32, 2_000 + hour)]
    assert replaced(later) == [("cd" * 32, 2_000 + hour), ("ef" * 32, 61_000 + hour)]
    account = funded.account("c1")
    assert account.api_key_sha256 == "12" * 32
    assert account.replaced_keys == (("cd" * 32, 2_000 + hour), ("ef" * 32, 61_000 + hour))


def test_a_rotation_without_a_grace_ends_every_replaced_key(funded: Script) -> None:
    """A leaked key is rotated with no grace: the keys still in an earlier rotation's
    grace end too, since the leaked one may be among them."""
    funded.rotate_key("c1", "cd" * 32, at_ms=1_000, old_key_valid_ms=60_000)

    leaked = funded.rotate_key("c1", "ef" * 32, at_ms=2_000)

    assert replaced(leaked) == []
    account = funded.account("c1")
    assert account.replaced_keys is msgspec.UNSET
    # Not written: the bytes of an account without a grace are what they were before it.
    assert b"replaced_keys" not in encode_record(account)
    assert decode_account(encode_record(account)) == account


def test_replaced_keys_are_bounded_and_never_the_new_key(funded: Script) -> None:
    for n in range(6):
        funded.rotate_key("c1", f"{n:02d}" * 32, at_ms=n, old_key_valid_ms=60_000)

    repeated = funded.rotate_key("c1", "05" * 32, at_ms=9, old_key_valid_ms=60_000)

    keys = replaced(repeated)
    assert len(keys) == MAX_REPLACED_KEYS
    assert "05" * 32 not in [sha256 for sha256, _ in keys]
    assert keys[-1] == ("04" * 32, 60_005)


def test_a_key_rotation_for_an_unknown_client_is_not_found(script: Script) -> None:
    decision = script.rotate_key("ghost", "cd" * 32)

    assert writes_nothing(decision)
    assert only_reply(decision)[1].outcome == "not_found"


# --- repeated request id --------------------------------------------------------------


def test_retry_while_in_flight_waits_and_both_waiters_get_the_meme(funded: Script) -> None:
    """Scenario: the client retries with the same Idempotency-Key while the first call
    still waits for the generator.
    We expect: the retry is charged nothing and becomes a second waiter; when the meme
    arrives both callers get the same delivered reply."""
    first = funded.request("c1", "r1", reply_to=3)
    first_id = funded.last_event_id

    retry = funded.request("c1", "r1", reply_to=7)
    retry_id = funded.last_event_id

    assert retry.entries == () and retry.approved is None and retry.replies == ()
    (record,) = retry.requests
    assert [w.correlation_id for w in record.waiters] == [first_id, retry_id]
    assert funded.account("c1").balance == 2  # one charge only

    outcome = funded.generated("c1", "r1")

    (delivered,) = outcome.entries
    assert [(to, r.correlation_id) for to, r in outcome.replies] == [
        (3, first_id),
        (7, retry_id),
    ]
    for _, reply in outcome.replies:
        assert (reply.outcome, reply.entry, reply.balance) == ("delivered", delivered, 2)
    assert first.entries[0].seq + 1 == delivered.seq


def test_the_waiter_its_generator_answered_is_not_answered_again(funded: Script) -> None:
    """Scenario: the generator made the meme in time and told the first caller itself
    (outcome "made"); a retry with the same key waits too.
    We expect: the delivery is settled as ever, and only the retry gets the ledger's
    reply."""
    funded.request("c1", "r1", reply_to=3)
    first_id = funded.last_event_id
    funded.request("c1", "r1", reply_to=7)
    retry_id = funded.last_event_id

    outcome = funded.generated("c1", "r1", replied_to=first_id)

    assert [type(e) for e in outcome.entries] == [MemeDelivered]
    assert [(to, r.correlation_id) for to, r in outcome.replies] == [(7, retry_id)]


def test_a_meme_made_too_late_is_refunded_to_every_waiter(funded: Script) -> None:
    # A generator names no waiter for a late meme; were one named, the refund must still
    # reach it: the client was not told anything else.
    funded.request("c1", "r1", at_ms=0, reply_to=3)
    first_id = funded.last_event_id

    late = funded.generated("c1", "r1", at_ms=DEADLINE_AFTER_MS + 1, replied_to=first_id)

    assert [type(e) for e in late.entries] == [TokensRefunded]
    assert [(to, r.correlation_id, r.outcome) for to, r in late.replies] == [
        (3, first_id, "refunded")
    ]


def test_retry_while_in_flight_beyond_max_waiters_is_told_in_progress(funded: Script) -> None:
    # The waiter list is bounded; a retry past the bound is not recorded, and is told
    # at once that the request is in progress (the API answers 409 with Retry-After).
    funded.request("c1", "r1")
    for _ in range(MAX_WAITERS - 1):
        funded.request("c1", "r1")
    assert len(funded.record("r1").waiters) == MAX_WAITERS

    decision = funded.request("c1", "r1")

    assert decision.entries == () and decision.requests == () and decision.approved is None
    ((_, reply),) = decision.replies
    assert reply.outcome == "in_progress"
    assert len(funded.record("r1").waiters) == MAX_WAITERS


def test_retry_after_delivery_returns_the_first_meme_and_charges_nothing(
    funded: Script,
) -> None:
    funded.request("c1", "r1")
    delivered = funded.generated("c1", "r1").entries[0]
    entries_before = list(funded.ledger.entries)

    retry = funded.request("c1", "r1", reply_to=9)

    assert writes_nothing(retry)
    reply_to, reply = only_reply(retry)
    assert (reply_to, reply.outcome, reply.entry, reply.balance) == (9, "delivered", delivered, 2)
    assert reply.correlation_id == funded.last_event_id
    assert funded.ledger.entries == entries_before
    assert funded.account("c1").tokens_charged == 1


def test_retry_after_refund_returns_the_refund_and_charges_nothing(funded: Script) -> None:
    funded.request("c1", "r1")
    funded.failed("c1", "r1")

    retry = funded.request("c1", "r1")

    assert writes_nothing(retry)
    _, reply = only_reply(retry)
    assert (reply.outcome, reply.reason, reply.balance) == (
        "refunded",
        RefundReason.GENERATOR_FAILED,
        3,
    )


def test_retry_after_rejection_returns_the_first_rejection_even_with_new_tokens(
    script: Script,
) -> None:
    """Scenario: a request is rejected for lack of tokens, the client buys tokens and
    retries with the same Idempotency-Key.
    We expect: the same key returns the first result (rejected, reason 3); a new key is
    needed for a new attempt."""
    script.register("c1")
    script.request("c1", "r1")
    script.buy("c1", "p1", tokens=2)

    retry = script.request("c1", "r1")

    assert writes_nothing(retry)
    _, reply = only_reply(retry)
    assert (reply.outcome, reply.reason, reply.balance) == ("rejected", 3, 2)


@pytest.mark.parametrize("first_ended_by", ["nothing", "generated", "failed"])
def test_same_request_id_with_other_parameters_is_rejected_with_reason_2(
    funded: Script, first_ended_by: str
) -> None:
    funded.request("c1", "r1", fingerprint=FINGERPRINT_A)
    if first_ended_by == "generated":
        funded.generated("c1", "r1")
    elif first_ended_by == "failed":
        funded.failed("c1", "r1")
    record_before = funded.record("r1")
    balance_before = funded.account("c1").balance

    decision = funded.request("c1", "r1", fingerprint=FINGERPRINT_B)

    assert writes_nothing(decision)
    _, reply = only_reply(decision)
    assert (reply.outcome, reply.reason) == ("rejected", RejectReason.IDEMPOTENCY_CONFLICT)
    assert funded.record("r1") == record_before
    assert funded.account("c1").balance == balance_before


def test_redelivered_request_while_in_flight_is_not_a_second_waiter(funded: Script) -> None:
    """Scenario: the input that charged r1 (and then a retry) is delivered again, same
    event id, while the meme is still being made.
    We expect: nothing for the redelivery (no charge, no new waiter), and when the meme
    arrives exactly one reply per distinct input, never two for the same one."""
    funded.request("c1", "r1", reply_to=3)
    first, first_id = funded.last_input, funded.last_event_id
    funded.request("c1", "r1", reply_to=7)
    retry, retry_id = funded.last_input, funded.last_event_id
    assert first is not None and retry is not None
    record_before = funded.record("r1")

    assert funded.redeliver(first) == Decision()
    assert funded.redeliver(retry) == Decision()

    assert funded.record("r1") == record_before
    assert [w.correlation_id for w in funded.record("r1").waiters] == [first_id, retry_id]
    assert funded.account("c1").balance == 2
    outcome = funded.generated("c1", "r1")
    assert [(to, r.correlation_id) for to, r in outcome.replies] == [
        (3, first_id),
        (7, retry_id),
    ]


def test_redelivered_request_after_its_end_answers_the_first_outcome_again(
    funded: Script,
) -> None:
    # Once the request has ended there is nobody waiting: a redelivery is answered like
    # any retry (the first outcome, nothing charged).
    funded.request("c1", "r1", reply_to=3)
    first = funded.last_input
    assert first is not None
    delivered = funded.generated("c1", "r1").entries[0]
    entries_before = list(funded.ledger.entries)

    decision = funded.redeliver(first)

    assert writes_nothing(decision)
    reply_to, reply = only_reply(decision)
    assert (reply_to, reply.correlation_id) == (3, first.event_id)
    assert (reply.outcome, reply.entry) == ("delivered", delivered)
    assert funded.ledger.entries == entries_before


# --- request ids are scoped per client ------------------------------------------------


@pytest.mark.parametrize("fingerprint", [FINGERPRINT_A, FINGERPRINT_B])
def test_request_id_of_another_client_is_an_independent_request(
    funded: Script, fingerprint: str
) -> None:
    """Scenario: c1 has r1 in flight; c2 sends its own request r1 (same or other
    parameters).
    We expect: c2 is charged normally (not an idempotency conflict, not a waiter of
    c1's request), and c1's request is untouched."""
    funded.register("c2")
    funded.buy("c2", "p1", tokens=3)
    funded.request("c1", "r1", fingerprint=FINGERPRINT_A)
    c1_record_before = funded.record("r1", "c1")
    c1_account_before = funded.account("c1")

    decision = funded.request("c2", "r1", fingerprint=fingerprint)

    (charged,) = decision.entries
    assert isinstance(charged, TokensCharged)
    assert (charged.client_id, charged.request_id, charged.seq, charged.balance_after) == (
        "c2",
        "r1",
        3,
        2,
    )
    assert decision.approved is not None
    assert (decision.approved.client_id, decision.approved.request_id) == ("c2", "r1")
    assert decision.replies == ()
    c2_record = funded.record("r1", "c2")
    assert (c2_record.client_id, c2_record.status, c2_record.fingerprint) == (
        "c2",
        "charged",
        fingerprint,
    )
    assert [w.correlation_id for w in c2_record.waiters] == [funded.last_event_id]
    assert funded.record("r1", "c1") == c1_record_before
    assert funded.account("c1") == c1_account_before
    assert funded.account("c2").balance == 2


def test_request_id_rejected_for_one_client_does_not_reject_another(funded: Script) -> None:
    funded.register("c0")  # no tokens
    assert funded.request("c0", "r1").entries[0].type == "MemeRejected"

    decision = funded.request("c1", "r1")

    assert decision.entries[0].type == "TokensCharged"
    assert funded.record("r1", "c0").status == "rejected"
    assert funded.record("r1", "c1").status == "charged"


def test_outcome_names_the_client_and_only_touches_that_clients_request(
    funded: Script,
) -> None:
    """Scenario: c1 and c2 both have a request r1 in flight; outcomes arrive for each.
    We expect: each outcome ends only the request of the client it names."""
    funded.register("c2")
    funded.buy("c2", "p1", tokens=3)
    funded.request("c1", "r1", reply_to=3)
    c1_waiter = funded.last_event_id
    funded.request("c2", "r1", reply_to=8)
    c2_waiter = funded.last_event_id

    delivered = funded.generated("c2", "r1")

    assert [e.client_id for e in delivered.entries] == ["c2"]
    assert [(to, r.correlation_id) for to, r in delivered.replies] == [(8, c2_waiter)]
    assert funded.record("r1", "c2").status == "delivered"
    assert funded.record("r1", "c1").status == "charged"

    refunded = funded.failed("c1", "r1")

    assert [(e.type, e.client_id) for e in refunded.entries] == [("TokensRefunded", "c1")]
    assert [(to, r.correlation_id) for to, r in refunded.replies] == [(3, c1_waiter)]
    assert funded.record("r1", "c1").status == "refunded"
    assert funded.record("r1", "c2").status == "delivered"
    assert (funded.account("c1").balance, funded.account("c2").balance) == (3, 2)
    # Both ended: late outcomes for either are ignored.
    assert funded.expire("c2", "r1", now_ms=DEADLINE_AFTER_MS) == Decision()
    assert funded.generated("c1", "r1") == Decision()


def test_retry_and_query_answer_the_asking_clients_own_request(funded: Script) -> None:
    funded.register("c2")
    funded.buy("c2", "p1", tokens=3)
    funded.request("c1", "r1")
    funded.request("c2", "r1")
    c2_meme = funded.generated("c2", "r1").entries[0]
    funded.failed("c1", "r1")

    c1_retry = only_reply(funded.request("c1", "r1"))[1]
    c2_retry = only_reply(funded.request("c2", "r1"))[1]
    c1_query = only_reply(funded.query_request("c1", "r1"))[1]
    c2_query = only_reply(funded.query_request("c2", "r1"))[1]

    assert (c1_retry.outcome, c1_retry.reason, c1_retry.balance) == (
        "refunded",
        RefundReason.GENERATOR_FAILED,
        3,
    )
    assert (c2_retry.outcome, c2_retry.entry, c2_retry.balance) == ("delivered", c2_meme, 2)
    assert c1_query.request is not None and c2_query.request is not None
    assert (c1_query.request.status, c1_query.request.meme) == ("refunded", None)
    assert (c2_query.request.status, c2_query.request.meme) == ("delivered", c2_meme)


def test_pending_index_holds_charged_requests_per_client_with_their_deadline(
    funded: Script,
) -> None:
    """The processor's timers come from this index: (client, request) -> deadline_ms."""
    funded.register("c2")
    funded.buy("c2", "p1", tokens=3)
    funded.request("c1", "r1", at_ms=10)
    funded.request("c2", "r1", at_ms=20)
    funded.request("c1", "r1", at_ms=30)  # a retry: the deadline stays the first one's

    def pending() -> set[tuple[str, str, int]]:
        return {
            parse_pending(key, value)
            for key, value in funded.ledger.records.items()
            if key.startswith(PENDING_PREFIX)
        }

    assert pending() == {
        ("c1", "r1", 10 + DEADLINE_AFTER_MS),
        ("c2", "r1", 20 + DEADLINE_AFTER_MS),
    }
    assert pending_key("c1", "r1") != pending_key("c2", "r1")

    funded.generated("c2", "r1")
    assert pending() == {("c1", "r1", 10 + DEADLINE_AFTER_MS)}
    funded.expire("c1", "r1", now_ms=10 + DEADLINE_AFTER_MS)
    assert pending() == set()


# --- outcomes -------------------------------------------------------------------------


def test_generated_meme_becomes_a_delivered_entry(funded: Script) -> None:
    funded.request("c1", "r1", at_ms=10, reply_to=3)

    decision = funded.generated("c1", "r1", at_ms=20)

    (delivered,) = decision.entries
    assert isinstance(delivered, MemeDelivered)
    assert (delivered.seq, delivered.balance_after) == (4, 2)
    assert (delivered.meme_id, delivered.template, delivered.image_key) == (
        "m-r1",
        "drake",
        "img/r1.png",
    )
    assert delivered.caption is None  # personal data: never in the ledger (v2)
    assert (delivered.schema_version, delivered.occurred_at_ms) == (2, 20)
    reply_to, reply = only_reply(decision)
    assert (reply_to, reply.outcome, reply.entry) == (3, "delivered", delivered)
    assert (reply.caption, reply.tokens_charged) == ("top / bottom", 1)
    record = funded.record("r1")
    assert (record.status, record.meme, record.waiters) == ("delivered", delivered, ())
    assert record.caption == "top / bottom"
    assert funded.account("c1").memes_delivered == 1


def test_generator_failure_refunds_the_token_with_reason_1(funded: Script) -> None:
    funded.request("c1", "r1")

    decision = funded.failed("c1", "r1", at_ms=30)

    (refunded,) = decision.entries
    assert isinstance(refunded, TokensRefunded)
    assert (refunded.seq, refunded.balance_after, refunded.tokens) == (4, 3, 1)
    assert refunded.reason == RefundReason.GENERATOR_FAILED == 1
    _, reply = only_reply(decision)
    assert (reply.outcome, reply.reason, reply.entry, reply.balance) == (
        "refunded",
        1,
        refunded,
        3,
    )
    account = funded.account("c1")
    assert (account.balance, account.tokens_refunded) == (3, 1)
    assert funded.record("r1").refund_reason == RefundReason.GENERATOR_FAILED


def test_the_price_is_a_parameter_and_a_refund_returns_what_was_charged() -> None:
    """Scenario: AI memes cost 3 tokens, standard ones 1; a subscribed client with 4
    tokens asks twice (the second is unaffordable), the first fails, then the
    subscription ends and a standard meme is asked for.
    We expect: 3 charged, then a rejection at balance 1, a refund of 3, then 1 charged."""
    script = Script(Pricing(standard=1, ai=3))
    script.register("c1")
    script.buy("c1", "p1", tokens=4)
    script.subscribe("c1", active=True)

    (charged,) = script.request("c1", "r1").entries
    (rejected,) = script.request("c1", "r2", fingerprint=FINGERPRINT_B).entries
    (refunded,) = script.failed("c1", "r1").entries
    script.subscribe("c1", active=False)
    (standard,) = script.request("c1", "r3").entries

    assert isinstance(charged, TokensCharged) and (charged.tokens, charged.kind) == (3, "ai")
    assert isinstance(rejected, MemeRejected) and rejected.balance_after == 1
    assert isinstance(refunded, TokensRefunded) and refunded.tokens == 3
    assert isinstance(standard, TokensCharged) and (standard.tokens, standard.kind) == (
        1,
        "standard",
    )
    assert script.account("c1").balance == 3


def test_a_delivered_meme_reply_carries_the_price_charged_also_to_a_retry() -> None:
    """Scenario: AI memes cost 3 tokens; a subscribed client's AI meme is delivered,
    then the client retries the same request.
    We expect: both delivered replies say 3 tokens were charged, the price the fold
    charged, not a constant."""
    script = Script(Pricing(standard=1, ai=3))
    script.register("c1")
    script.buy("c1", "p1", tokens=4)
    script.subscribe("c1", active=True)
    script.request("c1", "r1")

    _, delivered = only_reply(script.generated("c1", "r1", kind="ai"))
    _, retried = only_reply(script.request("c1", "r1"))

    assert (delivered.outcome, delivered.tokens_charged) == ("delivered", 3)
    assert (retried.outcome, retried.tokens_charged) == ("delivered", 3)


def test_only_a_delivered_meme_reply_carries_tokens_charged(funded: Script) -> None:
    funded.request("c1", "r1")
    _, refunded = only_reply(funded.failed("c1", "r1"))
    _, rejected = only_reply(funded.request("c1", "r1", fingerprint=FINGERPRINT_B))

    assert (refunded.outcome, refunded.tokens_charged) == ("refunded", None)
    assert (rejected.outcome, rejected.tokens_charged) == ("rejected", None)


def test_a_meme_costs_at_least_one_token() -> None:
    with pytest.raises(ValueError, match="at least 1 token"):
        Pricing(ai=0)


def test_expiry_refunds_the_token_with_reason_2(funded: Script) -> None:
    funded.request("c1", "r1", at_ms=0)

    decision = funded.expire("c1", "r1", now_ms=DEADLINE_AFTER_MS)

    (refunded,) = decision.entries
    assert isinstance(refunded, TokensRefunded)
    assert refunded.reason == RefundReason.DEADLINE_EXPIRED == 2
    assert (refunded.balance_after, refunded.occurred_at_ms) == (3, DEADLINE_AFTER_MS)
    assert refunded.request_id == "r1"
    assert only_reply(decision)[1].outcome == "refunded"
    assert funded.record("r1").status == "refunded"


def expiry_refund_id(client: str, request_id: str, now_ms: int) -> str:
    """The id of the refund a timer makes for ``client``'s request, on a fresh ledger
    where c1 and c2 both have ``request_id`` in flight at the same seq."""
    script = Script()
    for name in ("c1", "c2"):
        script.register(name)
        script.buy(name, "p1", tokens=3)
    script.request("c1", request_id)
    script.request("c2", request_id)
    (refunded,) = script.expire(client, request_id, now_ms=now_ms).entries
    assert isinstance(refunded, TokensRefunded)
    assert refunded.seq == 4
    return refunded.event_id


def test_expiry_refund_id_is_deterministic_valid_and_unique_per_client() -> None:
    # A timer has no event id of its own: the entry id derives from the request it ends
    # (its client and id), not from when the timer happened to fire.
    c1_id = expiry_refund_id("c1", "r1", now_ms=DEADLINE_AFTER_MS)

    assert ID.validate_python(c1_id) == c1_id
    assert expiry_refund_id("c1", "r1", now_ms=DEADLINE_AFTER_MS) == c1_id
    assert expiry_refund_id("c1", "r1", now_ms=DEADLINE_AFTER_MS + 123) == c1_id
    # Same request id, same seq, another client: another entry, so another id.
    assert expiry_refund_id("c2", "r1", now_ms=DEADLINE_AFTER_MS) != c1_id
    assert expiry_refund_id("c1", "r2", now_ms=DEADLINE_AFTER_MS) != c1_id


@pytest.mark.parametrize("early_by_ms", [1, DEADLINE_AFTER_MS])
def test_expiry_before_the_deadline_is_ignored_and_the_meme_can_still_come(
    funded: Script, early_by_ms: int
) -> None:
    """Scenario: a timer fires before the request's deadline (clock skew, a rebuilt
    timer heap).
    We expect: nothing (no refund, no reply); the meme that then arrives is delivered."""
    funded.request("c1", "r1", at_ms=100)
    deadline_ms = 100 + DEADLINE_AFTER_MS
    account_before = funded.account("c1")
    record_before = funded.record("r1")

    decision = funded.expire("c1", "r1", now_ms=deadline_ms - early_by_ms)

    assert decision == Decision()
    assert funded.account("c1") == account_before
    assert funded.record("r1") == record_before
    outcome = funded.generated("c1", "r1")
    assert [e.type for e in outcome.entries] == ["MemeDelivered"]
    assert only_reply(outcome)[1].outcome == "delivered"


@pytest.mark.parametrize(("made_after_ms", "ends"), [(0, "delivered"), (1, "refunded")])
def test_a_meme_made_after_the_deadline_is_refunded_whenever_it_is_folded(
    funded: Script, made_after_ms: int, ends: str
) -> None:
    """Scenario: the generator makes the meme at the deadline, or 1 ms after it.
    We expect: judged by the MemeGenerated's event time, not by when it is folded: at
    the deadline it is delivered; after it, not delivered, and the charge refunded at
    once (DEADLINE_EXPIRED, as the timer would), which is what the client was told."""
    funded.request("c1", "r1", at_ms=100)
    deadline_ms = 100 + DEADLINE_AFTER_MS

    decision = funded.generated("c1", "r1", at_ms=deadline_ms + made_after_ms)

    (_, reply) = only_reply(decision)
    assert reply.outcome == ends
    if ends == "refunded":
        assert [(e.type, e.occurred_at_ms) for e in decision.entries] == [
            ("TokensRefunded", deadline_ms + 1)
        ]
        assert reply.reason == RefundReason.DEADLINE_EXPIRED
        assert funded.record("r1").status == "refunded"
        assert funded.account("c1").balance == 3
        assert funded.expire("c1", "r1", now_ms=deadline_ms + 2_000) == Decision()
    else:
        assert [e.type for e in decision.entries] == ["MemeDelivered"]


@pytest.mark.parametrize(
    ("failed_after_ms", "reason"),
    [(0, RefundReason.GENERATOR_FAILED), (1, RefundReason.DEADLINE_EXPIRED)],
)
def test_a_failure_after_the_deadline_is_the_deadlines_refund(
    funded: Script, failed_after_ms: int, reason: RefundReason
) -> None:
    """Scenario: the generator fails at the deadline, or 1 ms after it (a pool that
    never got to the work in time).
    We expect: judged by event time, as a meme is: at the deadline the generator failed
    (the client hears 502); after it the deadline expired (504), the very refund the
    timer would have made (same entry id), and the timer then does nothing."""
    funded.request("c1", "r1", at_ms=100)
    deadline_ms = 100 + DEADLINE_AFTER_MS
    timer_twin = Script()  # the same history, ended by the deadline's timer instead
    timer_twin.register("c1")
    timer_twin.buy("c1", "p1", tokens=3)
    timer_twin.request("c1", "r1", at_ms=100)
    (by_timer,) = timer_twin.expire("c1", "r1", now_ms=deadline_ms + 1).entries

    decision = funded.failed("c1", "r1", at_ms=deadline_ms + failed_after_ms)

    (refunded,) = decision.entries
    assert isinstance(refunded, TokensRefunded)
    assert (refunded.reason, refunded.tokens, refunded.balance_after) == (reason, 1, 3)
    assert only_reply(decision)[1].reason == reason
    assert funded.record("r1").refund_reason == reason
    assert (refunded.event_id == by_timer.event_id) == (reason == RefundReason.DEADLINE_EXPIRED)
    assert funded.expire("c1", "r1", now_ms=deadline_ms + 2_000) == Decision()


def test_early_expiry_then_expiry_at_the_deadline_refunds_once(funded: Script) -> None:
    funded.request("c1", "r1", at_ms=100)
    deadline_ms = 100 + DEADLINE_AFTER_MS

    assert funded.expire("c1", "r1", now_ms=deadline_ms - 1) == Decision()
    on_time = funded.expire("c1", "r1", now_ms=deadline_ms)  # the deadline is inclusive
    again = funded.expire("c1", "r1", now_ms=deadline_ms + 1)

    assert [(e.type, e.occurred_at_ms) for e in on_time.entries] == [
        ("TokensRefunded", deadline_ms)
    ]
    assert only_reply(on_time)[1].reason == RefundReason.DEADLINE_EXPIRED
    assert again == Decision()
    assert funded.account("c1").balance == 3


@pytest.mark.parametrize("ended_by", ["failed", "expired"])
@pytest.mark.parametrize("late", ["generated", "failed", "expired"])
def test_late_outcome_after_refund_is_ignored(funded: Script, ended_by: str, late: str) -> None:
    """Scenario: the request was refunded; then a meme (or another failure, or the
    timer) arrives.
    We expect: nothing: no entry, no reply, the client keeps the refund."""
    funded.request("c1", "r1")
    if ended_by == "failed":
        funded.failed("c1", "r1")
    else:
        funded.expire("c1", "r1", now_ms=DEADLINE_AFTER_MS)
    account_before = funded.account("c1")

    if late == "generated":
        decision = funded.generated("c1", "r1")
    elif late == "failed":
        decision = funded.failed("c1", "r1")
    else:
        decision = funded.expire("c1", "r1", now_ms=2 * DEADLINE_AFTER_MS)

    assert decision == Decision()
    assert funded.account("c1") == account_before
    assert funded.record("r1").status == "refunded"


@pytest.mark.parametrize("late", ["generated", "failed", "expired"])
def test_any_outcome_after_delivery_is_ignored(funded: Script, late: str) -> None:
    funded.request("c1", "r1")
    funded.generated("c1", "r1")
    account_before = funded.account("c1")

    if late == "generated":
        decision = funded.generated("c1", "r1")
    elif late == "failed":
        decision = funded.failed("c1", "r1")
    else:
        decision = funded.expire("c1", "r1", now_ms=DEADLINE_AFTER_MS)

    assert decision == Decision()
    assert funded.account("c1") == account_before
    assert funded.account("c1").memes_delivered == 1


def test_outcome_for_unknown_or_rejected_or_foreign_request_is_ignored(
    funded: Script,
) -> None:
    funded.register("c0")  # no tokens: its request is rejected
    funded.request("c0", "r-rejected")
    funded.request("c1", "r1")

    assert funded.generated("c1", "never-requested") == Decision()
    assert funded.failed("c0", "r-rejected") == Decision()
    # An outcome naming the wrong client must not end (or refund) c1's request.
    assert funded.failed("c0", "r1") == Decision()
    assert funded.expire("c0", "r1", now_ms=DEADLINE_AFTER_MS) == Decision()
    assert funded.record("r1").status == "charged"


# --- queries --------------------------------------------------------------------------


def test_account_query_answers_the_account_and_writes_nothing(funded: Script) -> None:
    funded.subscribe("c1", active=True, until_ms=99)
    funded.request("c1", "r1")
    records_before = dict(funded.ledger.records)

    decision = funded.query_account("c1")

    assert writes_nothing(decision)
    reply_to, reply = only_reply(decision)
    assert (reply_to, reply.outcome, reply.balance) == (4, "account", 2)
    assert reply.account is not None
    assert reply.account == funded.account("c1").view(0)  # the query's time
    assert (reply.account.ai_active, reply.account.ai_until_ms) == (True, 99)
    assert funded.ledger.records == records_before


@pytest.mark.parametrize(("queried_at_ms", "served"), [(98, True), (99, False), (5000, False)])
def test_the_account_says_memes_ai_is_active_only_while_it_is_served(
    funded: Script, queried_at_ms: int, served: bool
) -> None:
    """Scenario: Memes AI switched on until 99 ms; the account is read at, after and long
    after that time. We expect: ``ai_active`` true only before it, as the memes are
    (the switch itself stays on in the record, with its end)."""
    funded.subscribe("c1", active=True, until_ms=99)

    account = funded.account("c1")
    view = account.view(queried_at_ms)

    assert (view.ai_active, view.ai_until_ms) == (served, 99)
    assert account.ai_entitled(queried_at_ms) is served
    assert account.ai_active  # the record keeps the switch


def test_account_query_for_unknown_client_is_not_found(script: Script) -> None:
    decision = script.query_account("ghost")

    assert writes_nothing(decision)
    assert only_reply(decision)[1].outcome == "not_found"


def test_request_query_answers_the_owner(funded: Script) -> None:
    funded.request("c1", "r1")
    delivered = funded.generated("c1", "r1").entries[0]

    decision = funded.query_request("c1", "r1")

    assert writes_nothing(decision)
    _, reply = only_reply(decision)
    assert reply.outcome == "request"
    assert reply.request is not None
    assert (reply.request.status, reply.request.kind, reply.request.meme) == (
        "delivered",
        "standard",
        delivered,
    )


@pytest.mark.parametrize(("asker", "request_id"), [("c2", "r1"), ("c1", "no-such-request")])
def test_request_query_of_another_clients_or_unknown_request_is_not_found(
    funded: Script, asker: str, request_id: str
) -> None:
    # "not_found", not "forbidden": a client must not learn that another's id exists.
    funded.register("c2")
    funded.request("c1", "r1")

    decision = funded.query_request(asker, request_id)

    assert writes_nothing(decision)
    _, reply = only_reply(decision)
    assert (reply.outcome, reply.request) == ("not_found", None)


# --- erasure of personal data ----------------------------------------------------------


def test_erasure_goes_in_batches_after_a_cursor(
    funded: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scenario: 3 delivered requests (r1..r3) and batches of 2.
    We expect: a first batch r1, r2 that names r2 as the cursor, then r3 as the last;
    each batch one balance-neutral entry naming its range; no caption left."""
    monkeypatch.setattr("ledger.account_rules.ERASE_BATCH", 2)
    for request_id in ("r1", "r2", "r3"):
        funded.request("c1", request_id)
        funded.generated("c1", request_id)
    balance = funded.account("c1").balance

    first = funded.erase("c1")
    second = funded.erase("c1", after_request_id="r2")

    batches = []
    for decision in (first, second):
        (entry,) = decision.entries
        assert isinstance(entry, PersonalDataErased) and entry.balance_after == balance
        _, reply = only_reply(decision)
        assert reply.outcome == "erased" and reply.erasure is not None
        batches.append((entry.first_request_id, entry.last_request_id, reply.erasure))
    (a, b, view1), (c, d, view2) = batches
    assert (a, b, view1.next_after_request_id, view1.image_keys) == (
        "r1",
        "r2",
        "r2",
        ("img/r1.png", "img/r2.png"),
    )
    assert (c, d, view2.next_after_request_id, view2.requests_erased) == ("r3", "r3", None, 1)
    assert all(funded.record(r).caption is None for r in ("r1", "r2", "r3"))
    assert funded.account("c1").balance == balance


def test_a_request_in_flight_is_counted_and_erased_by_the_next_erasure(funded: Script) -> None:
    funded.request("c1", "r1")

    during = funded.erase("c1")

    _, reply = only_reply(during)
    assert reply.erasure is not None
    assert (reply.erasure.in_flight, reply.erasure.requests_erased, during.entries) == (1, 0, ())
    funded.generated("c1", "r1")
    assert funded.record("r1").caption == "top / bottom"
    (entry,) = funded.erase("c1").entries
    assert isinstance(entry, PersonalDataErased)
    assert funded.record("r1").caption is None


def test_erasure_for_an_unknown_client_is_not_found(script: Script) -> None:
    decision = script.erase("ghost")

    assert writes_nothing(decision)
    assert only_reply(decision)[1].outcome == "not_found"


def test_erasure_touches_only_the_clients_own_records(funded: Script) -> None:
    funded.register("c2")
    funded.buy("c2", "p1", tokens=1)
    funded.request("c2", "r1")
    funded.generated("c2", "r1")

    funded.erase("c1")

    assert funded.record("r1", client="c2").caption == "top / bottom"


# --- forgetting ended requests --------------------------------------------------------

FORGOTTEN_AT = DEADLINE_AFTER_MS + REMEMBER_MS  # of a request made at 0


def test_a_retry_within_the_window_gets_the_first_meme_and_after_it_is_a_new_request(
    funded: Script,
) -> None:
    funded.request("c1", "r1")
    funded.generated("c1", "r1", at_ms=100)

    within = funded.request("c1", "r1", at_ms=FORGOTTEN_AT - 1)
    _, reply = only_reply(within)
    assert reply.outcome == "delivered" and within.entries == ()

    after = funded.request("c1", "r1", at_ms=FORGOTTEN_AT)
    charged = after.entries[0]
    assert isinstance(charged, TokensCharged) and charged.request_id == "r1"
    assert funded.account().balance == 3 - 2
    assert funded.record("r1").status == "charged"


def test_a_request_query_after_the_window_is_not_found(funded: Script) -> None:
    funded.request("c1", "r1")
    funded.failed("c1", "r1", at_ms=100)

    _, within = only_reply(funded.query_request("c1", "r1", at_ms=FORGOTTEN_AT - 1))
    _, after = only_reply(funded.query_request("c1", "r1", at_ms=FORGOTTEN_AT))

    assert within.outcome == "request" and after.outcome == "not_found"


def test_a_request_in_flight_is_never_forgotten(funded: Script) -> None:
    funded.request("c1", "r1")

    retry = funded.request("c1", "r1", at_ms=FORGOTTEN_AT + 1)
    gone = funded.forget(now_ms=FORGOTTEN_AT + 1)

    assert retry.entries == () and len(funded.record("r1").waiters) == 2
    assert gone.forgotten == ()


def test_a_rejection_keeps_its_deadline_and_is_forgotten_like_any_end(script: Script) -> None:
    script.register("c1")
    script.request("c1", "x1")  # no tokens: rejected
    script.buy("c1", "p1", tokens=1)

    assert script.record("x1").deadline_ms == DEADLINE_AFTER_MS
    again = script.request("c1", "x1", at_ms=FORGOTTEN_AT)
    assert isinstance(again.entries[0], TokensCharged)


def test_a_record_without_a_deadline_is_never_forgotten() -> None:
    # Rejections recorded before rejections kept their deadline.
    old = RequestRecord(request_id="x", client_id="c", fingerprint="f", status="rejected")
    assert not old.forgotten_at(10**15, REMEMBER_MS)


def ended_index(script: Script) -> list[bytes]:
    return sorted(k for k in script.ledger.records if k.startswith(ENDED_PREFIX))


def test_forget_drops_ended_records_and_their_index_earliest_deadline_first(
    funded: Script,
) -> None:
    funded.buy("c1", "p2", tokens=10)
    for i, at_ms in enumerate((30, 10, 20)):
        funded.request("c1", f"r{i}", at_ms=at_ms)
        funded.generated("c1", f"r{i}", at_ms=at_ms + 1)
    funded.request("c1", "open", at_ms=0)  # still in flight: no index entry
    assert len(ended_index(funded)) == 3

    nothing_yet = funded.forget(now_ms=FORGOTTEN_AT + 9)
    first_two = funded.forget(now_ms=FORGOTTEN_AT + 30, limit=2)

    assert nothing_yet.forgotten == ()
    assert [g.request_id for g in first_two.forgotten] == ["r1", "r2"]
    assert all(g.record for g in first_two.forgotten)
    assert request_key("c1", "r1") not in funded.ledger.records
    assert request_key("c1", "r2") not in funded.ledger.records
    assert ended_index(funded) == [ended_key("c1", "r0", 30 + DEADLINE_AFTER_MS)]
    assert funded.record("r0").status == "delivered"
    assert funded.record("open").status == "charged"


def test_forget_reads_the_index_from_its_cursor_on(funded: Script) -> None:
    for request_id, at_ms in (("r1", 10), ("r2", 20)):
        funded.request("c1", request_id, at_ms=at_ms)
        funded.generated("c1", request_id, at_ms=at_ms + 1)

    after_r1 = funded.forget(now_ms=FORGOTTEN_AT + 20, since_ms=DEADLINE_AFTER_MS + 11)

    assert [g.request_id for g in after_r1.forgotten] == ["r2"]
    assert funded.record("r1").status == "delivered"


def test_forgetting_a_reused_id_drops_the_old_index_entry_and_keeps_the_new_record(
    funded: Script,
) -> None:
    funded.request("c1", "r1")
    funded.generated("c1", "r1", at_ms=1)
    funded.request("c1", "r1", at_ms=FORGOTTEN_AT)  # a new request under the old id

    stale = funded.forget(now_ms=FORGOTTEN_AT)

    assert stale.forgotten == (Forgotten("c1", "r1", DEADLINE_AFTER_MS, record=False),)
    assert funded.record("r1").status == "charged"
    assert ended_index(funded) == []


def test_forgetting_is_invisible_to_every_later_decision(funded: Script) -> None:
    """The same inputs with and without a ``Forget`` between them decide the same."""

    def inputs(script: Script, forget_at: int | None) -> list[Decision]:
        decisions = [script.request("c1", "r1"), script.generated("c1", "r1", at_ms=1)]
        if forget_at is not None:
            script.forget(now_ms=forget_at)
        decisions.append(script.query_request("c1", "r1", at_ms=FORGOTTEN_AT))
        decisions.append(script.request("c1", "r1", at_ms=FORGOTTEN_AT + 1))
        return decisions

    forgetting, keeping = Script(), Script()
    for script in (forgetting, keeping):
        script.register("c1")
        script.buy("c1", "p1", tokens=3)

    assert inputs(forgetting, FORGOTTEN_AT) == inputs(keeping, None)
    assert request_key("c1", "r1") in forgetting.ledger.records  # the newer request


def test_the_audit_accepts_a_forgotten_id_charged_again_a_day_later_and_nothing_sooner(
    funded: Script,
) -> None:
    funded.request("c1", "r1")
    funded.generated("c1", "r1", at_ms=1)
    funded.request("c1", "r1", at_ms=FORGOTTEN_AT)
    funded.generated("c1", "r1", at_ms=FORGOTTEN_AT + 1)

    replay = Replay().apply_all(funded.ledger.entries)
    assert replay.violations == [] and replay.ids_reused == 1
    (row,) = reconcile(gather(funded.ledger.entries, [])).clients
    assert row.requests_with_several_outcomes == [] and row.requests_open == []

    # A day is the least the service remembers: a second charge within it is a double
    # charge, whatever the processor's setting.
    soon = Script(remember_ms=DEADLINE_AFTER_MS)
    soon.register("c1")
    soon.buy("c1", "p1", tokens=3)
    soon.request("c1", "r1")
    soon.generated("c1", "r1", at_ms=1)
    soon.request("c1", "r1", at_ms=2 * DEADLINE_AFTER_MS)
    violations = Replay().apply_all(soon.ledger.entries).violations
    assert len(violations) == 1 and "TokensCharged" in violations[0]


# --- entries: sequence, balance, determinism ------------------------------------------


def run_mixed_scenario(script: Script) -> None:
    """Every kind of entry for two clients, interleaved."""
    script.register("c1")
    script.register("c2")
    script.buy("c1", "p1", tokens=2)
    script.request("c2", "x1")  # rejected: no tokens
    script.subscribe("c1", active=True, until_ms=50)
    script.request("c1", "r1", at_ms=10)
    script.request("c1", "r2", at_ms=60)
    script.request("c1", "r3", at_ms=70)  # rejected: balance 0
    script.generated("c1", "r1", kind="ai")
    script.failed("c1", "r2")
    script.buy("c2", "p1", tokens=1)
    script.request("c2", "r1")  # c2's own r1: request ids are per client
    script.expire("c2", "r1", now_ms=10_000)
    script.subscribe("c1", active=False)


def test_entries_have_gapless_seq_and_matching_balance_after(script: Script) -> None:
    run_mixed_scenario(script)

    expected_seq: dict[str, int] = {}
    running_balance: dict[str, int] = {}
    for entry in script.ledger.entries:
        expected_seq[entry.client_id] = expected_seq.get(entry.client_id, 0) + 1
        assert entry.seq == expected_seq[entry.client_id], entry
        delta = {"TokensCredited": 1, "TokensCharged": -1, "TokensRefunded": 1}.get(entry.type, 0)
        tokens = getattr(entry, "tokens", 0)
        running_balance[entry.client_id] = running_balance.get(entry.client_id, 0) + delta * tokens
        assert entry.balance_after == running_balance[entry.client_id], entry
    for client, seq in expected_seq.items():
        account = script.account(client)
        assert (account.seq, account.balance) == (seq, running_balance[client])
    # The scenario really produced every entry type, or the loop above proves little.
    assert {e.type for e in script.ledger.entries} == {
        "AccountOpened",
        "TokensCredited",
        "TokensCharged",
        "MemeRejected",
        "MemeDelivered",
        "TokensRefunded",
        "SubscriptionChanged",
    }


def test_same_inputs_on_fresh_ledgers_give_identical_entries_and_records() -> None:
    first, second = Script(), Script()

    run_mixed_scenario(first)
    run_mixed_scenario(second)

    assert [e.model_dump() for e in first.ledger.entries] == [
        e.model_dump() for e in second.ledger.entries
    ]
    assert first.ledger.records == second.ledger.records
    assert first.approved == second.approved
    # Output ids derive from input ids: stable across runs (above), unique, and valid
    # ids whatever the input ids look like.
    ids = [e.event_id for e in first.ledger.entries] + [a.event_id for a in first.approved]
    assert len(first.approved) == 3  # c1's r1 and r2, c2's r1: not a vacuous check
    assert len(set(ids)) == len(ids)
    assert all(ID.validate_python(i) == i for i in ids)


def test_ids_of_one_request_differ_between_its_charge_approval_and_outcome(
    funded: Script,
) -> None:
    charged = funded.request("c1", "r1")
    delivered = funded.generated("c1", "r1")
    assert charged.approved is not None

    ids = {charged.entries[0].event_id, charged.approved.event_id, delivered.entries[0].event_id}

    assert len(ids) == 3


def test_replaying_entries_with_evolve_reproduces_every_account(script: Script) -> None:
    run_mixed_scenario(script)

    replayed: dict[str, Account] = {}
    for entry in script.ledger.entries:
        replayed[entry.client_id] = evolve(replayed.get(entry.client_id), entry)

    for client in ("c1", "c2"):
        assert replayed[client] == script.account(client)


# --- evolve guards --------------------------------------------------------------------


def entries_of(script: Script, client: str) -> list[LedgerEntryUnion]:
    return [e for e in script.ledger.entries if e.client_id == client]


def replay(entries: list[LedgerEntryUnion]) -> Account | None:
    account = None
    for entry in entries:
        account = evolve(account, entry)
    return account


def test_evolve_rejects_a_seq_gap(funded: Script) -> None:
    funded.request("c1", "r1")
    opened, credited, charged = entries_of(funded, "c1")

    with pytest.raises(LedgerCorrupt, match="seq 3 follows 1"):
        replay([opened, charged])
    with pytest.raises(LedgerCorrupt, match="seq 2 follows 2"):
        replay([opened, credited, credited])  # a duplicated entry is a gap backwards


def test_each_entry_carries_the_hash_of_the_clients_previous_entry(funded: Script) -> None:
    funded.request("c1", "r1")
    opened, credited, charged = entries_of(funded, "c1")

    assert opened.prev_hash == GENESIS_HASH
    assert credited.prev_hash == entry_hash(opened)
    assert charged.prev_hash == entry_hash(credited)
    assert funded.account("c1").last_hash == entry_hash(charged)


def test_evolve_rejects_an_edited_entry_through_the_hash_chain(funded: Script) -> None:
    """Scenario: an entry is edited in a copy of the log in a way that keeps seq and
    balance consistent (another purchase id). We expect: the next entry's prev_hash no
    longer matches, and the replay names the client and seq."""
    funded.request("c1", "r1")
    opened, credited, charged = entries_of(funded, "c1")
    edited = credited.model_copy(update={"purchase_id": "forged"})

    with pytest.raises(LedgerCorrupt, match="client c1 seq 3: prev_hash"):
        replay([opened, edited, charged])


def test_evolve_rejects_an_altered_balance_after(funded: Script) -> None:
    opened, credited = entries_of(funded, "c1")
    tampered = credited.model_copy(update={"balance_after": credited.balance_after + 1})

    with pytest.raises(LedgerCorrupt, match="balance 3, entry says 4"):
        replay([opened, tampered])


def test_evolve_rejects_an_entry_before_account_opened(funded: Script) -> None:
    _, credited = entries_of(funded, "c1")

    with pytest.raises(LedgerCorrupt, match="before AccountOpened"):
        evolve(None, credited)


def test_evolve_rejects_an_entry_of_another_client(funded: Script) -> None:
    # c2's credit has exactly the seq and balance_after c1's account expects next, so
    # only the client check can catch it (an entry routed to the wrong account).
    funded.register("c2")
    funded.buy("c2", "p1", tokens=3)
    c1_opened, _ = entries_of(funded, "c1")
    _, c2_credited = entries_of(funded, "c2")
    assert (c2_credited.seq, c2_credited.balance_after) == (2, 3)

    with pytest.raises(LedgerCorrupt, match="of client c2 applied to account c1"):
        replay([c1_opened, c2_credited])


def test_evolve_rejects_a_second_account_opened(funded: Script) -> None:
    opened, credited = entries_of(funded, "c1")
    # A re-opening that would otherwise fit (next seq, unchanged balance).
    reopened = opened.model_copy(update={"seq": 3, "balance_after": credited.balance_after})

    with pytest.raises(LedgerCorrupt, match="AccountOpened of client c1 applied to account c1"):
        replay([opened, credited, reopened])
    with pytest.raises(LedgerCorrupt, match="AccountOpened"):
        replay([opened, opened])


# --- ids stay valid whatever the input ids are ---------------------------------------


def test_registration_with_a_maximum_length_event_id_opens_the_account() -> None:
    ledger = MemoryLedger()
    event = ClientRegistered(
        event_id="e" * 128,
        client_id="c1",
        region=REGION,
        occurred_at_ms=0,
        api_key_sha256=API_KEY_SHA256,
        reply_to=0,
    )

    decision = ledger.handle(event)

    assert isinstance(decision.entries[0], AccountOpened)


def test_expiry_refunds_a_request_with_a_maximum_length_request_id(funded: Script) -> None:
    long_request_id = "r" * 128
    charged = funded.request("c1", long_request_id)
    assert isinstance(charged.entries[0], TokensCharged)  # the charge itself works

    decision = funded.expire("c1", long_request_id, now_ms=DEADLINE_AFTER_MS)

    assert isinstance(decision.entries[0], TokensRefunded)
    assert funded.account("c1").balance == 3


def test_maximum_length_ids_in_every_input_give_valid_outputs_on_every_path() -> None:
    """Client, purchase, request and event ids all at the 128-char limit, through
    registration, purchase, subscription, charge, delivery, failure and expiry."""
    client = "c" * 128
    ids = (f"{n}".rjust(128, "e") for n in itertools.count(1))
    envelope = {"client_id": client, "region": REGION, "occurred_at_ms": 0}

    def requested(request_id: str) -> MemeRequested:
        return MemeRequested(
            event_id=next(ids),
            **envelope,
            request_id=request_id,
            fingerprint=FINGERPRINT_A,
            lat=0.0,
            lon=0.0,
            query="q",
            deadline_ms=DEADLINE_AFTER_MS,
            reply_to=3,
        )

    rid = ["r" * 127 + str(n) for n in range(3)]
    inputs: list[InputEvent | Expire] = [
        ClientRegistered(event_id=next(ids), **envelope, api_key_sha256=API_KEY_SHA256, reply_to=0),
        TokensPurchased(
            event_id=next(ids), **envelope, purchase_id="p" * 128, tokens=5, reply_to=1
        ),
        SubscriptionRequested(event_id=next(ids), **envelope, active=True, reply_to=2),
        requested(rid[0]),
        requested(rid[1]),
        requested(rid[2]),
        MemeGenerated(
            event_id=next(ids),
            **envelope,
            request_id=rid[0],
            meme_id="m",
            kind="ai",
            template="t",
            caption="c",
            image_key="k",
        ),
        MemeFailed(event_id=next(ids), **envelope, request_id=rid[1], kind="ai", error="x"),
        Expire(client_id=client, request_id=rid[2], region=REGION, now_ms=DEADLINE_AFTER_MS),
    ]
    ledger = MemoryLedger()

    decisions = [ledger.handle(event) for event in inputs]

    assert [e.type for e in ledger.entries] == [
        "AccountOpened",
        "TokensCredited",
        "SubscriptionChanged",
        "TokensCharged",
        "TokensCharged",
        "TokensCharged",
        "MemeDelivered",
        "TokensRefunded",
        "TokensRefunded",
    ]
    out_ids = [e.event_id for e in ledger.entries]
    out_ids += [d.approved.event_id for d in decisions if d.approved is not None]
    assert len(out_ids) == 12
    assert len(set(out_ids)) == len(out_ids)
    assert all(ID.validate_python(i) == i for i in out_ids)
    account = ledger.state.account(client)
    assert account is not None and account.balance == 4
