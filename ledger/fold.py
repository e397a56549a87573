"""The ledger's decisions, as a pure fold: ``decide(state, input) -> Decision``.

No I/O, no clock, no randomness: time is the input's ``occurred_at_ms`` (or the
``now_ms`` of an ``Expire``), and every id is derived from the input's id
(``derived_id``). Request ids and purchase ids are scoped to their client. The live
processor, the replay and the tests run this same code.

``evolve(account, entry)`` applies one ledger entry to an account. ``decide`` builds
every entry through it, so a replay of the ledger topic (folding entries with
``evolve``) reproduces the live balances by construction; ``evolve`` also checks each
entry's ``seq``, ``balance_after`` and ``prev_hash`` (the per-client hash chain) and
raises ``LedgerCorrupt`` on any mismatch.

Checks for a meme request, in order (the first that applies decides):

1. unknown client -> rejected (reason 1), nothing stored;
2. request id seen before with other parameters -> rejected (reason 2), nothing stored;
3. request id seen before -> the first outcome again, or wait for it; nothing charged;
4. the kind is ``ai`` if the subscription is active at the request's time, else
   ``standard``; balance below that kind's price -> ``MemeRejected`` (reason 3);
5. otherwise ``TokensCharged`` of the price; the work goes to the kind's pool.

A charged request ends exactly once: ``MemeDelivered`` (meme made) or
``TokensRefunded`` of what was charged (generator failed, or no outcome by the
deadline). Outcomes that arrive after the end are ignored: "when in doubt, the client
gets a free meme".

A delivered meme's caption is kept in the request record, never in the ledger entry;
``ErasureRequested`` erases it there (``docs/data-retention.md``).

The price is a parameter (``Pricing``): the live processor charges the list price, and
the what-if replay (``ledger.whatif``) re-decides the same history under another one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Protocol

from core.ids import derived_id
from ledger.state import (
    MAX_WAITERS,
    Account,
    PurchaseRecord,
    RequestRecord,
    Waiter,
)
from schemas.events import (
    AccountOpened,
    AccountQueried,
    ClientRegistered,
    ErasureRequested,
    ErasureView,
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


@dataclass(frozen=True, slots=True)
class Pricing:
    """Tokens one meme costs, by kind."""

    standard: int = 1
    ai: int = 1

    def __post_init__(self) -> None:
        if self.standard < 1 or self.ai < 1:
            raise ValueError(f"a meme costs at least 1 token: {self}")

    def of(self, kind: Kind) -> int:
        return self.ai if kind == "ai" else self.standard


LIST_PRICE = Pricing()


class LedgerCorrupt(Exception):
    """An entry does not follow from the account it is applied to."""


class StateView(Protocol):
    def account(self, client_id: str) -> Account | None: ...
    def request(self, client_id: str, request_id: str) -> RequestRecord | None: ...
    def purchase(self, client_id: str, purchase_id: str) -> PurchaseRecord | None: ...
    def requests_of(
        self, client_id: str, after_request_id: str = ""
    ) -> Iterator[RequestRecord]: ...


@dataclass(frozen=True, slots=True)
class Expire:
    """Timer input: the request's deadline has passed without an outcome."""

    client_id: str
    request_id: str
    region: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class Decision:
    """What one input changes. The processor writes all of it in one transaction."""

    entries: tuple[LedgerEntryUnion, ...] = ()
    account: Account | None = None
    requests: tuple[RequestRecord, ...] = ()
    purchase: PurchaseRecord | None = None
    approved: MemeApproved | None = None
    replies: tuple[tuple[int, Reply], ...] = ()


NOTHING = Decision()


def decide(state: StateView, event: InputEvent | Expire, pricing: Pricing = LIST_PRICE) -> Decision:
    match event:
        case MemeRequested():
            return _meme_requested(state, event, pricing)
        case MemeGenerated():
            return _meme_generated(state, event)
        case MemeFailed():
            return _end_with_refund(
                state, event, RefundReason.GENERATOR_FAILED, event.event_id, event.occurred_at_ms
            )
        case Expire():
            return _end_with_refund(
                state,
                event,
                RefundReason.DEADLINE_EXPIRED,
                derived_id(event.client_id, event.request_id, "expired"),
                event.now_ms,
            )
        case TokensPurchased():
            return _tokens_purchased(state, event)
        case ClientRegistered():
            return _client_registered(state, event)
        case SubscriptionRequested():
            return _subscription_requested(state, event)
        case ErasureRequested():
            return _erasure_requested(state, event)
        case AccountQueried():
            account = state.account(event.client_id)
            if account is None:
                return _reply(event.reply_to, event.event_id, "not_found")
            return _reply(
                event.reply_to,
                event.event_id,
                "account",
                balance=account.balance,
                account=account.view(),
            )
        case RequestQueried():
            record = state.request(event.client_id, event.request_id)
            if record is None:
                return _reply(event.reply_to, event.event_id, "not_found")
            return _reply(event.reply_to, event.event_id, "request", request=record.view())
    raise TypeError(f"no rule for {type(event).__name__}")


def evolve(account: Account | None, entry: LedgerEntryUnion) -> Account:
    """Apply one ledger entry; the only place a balance changes."""
    if account is None:
        if not isinstance(entry, AccountOpened):
            raise LedgerCorrupt(f"{entry.type} for client {entry.client_id} before AccountOpened")
        account = Account(client_id=entry.client_id, api_key_sha256=entry.api_key_sha256)
    elif isinstance(entry, AccountOpened) or entry.client_id != account.client_id:
        raise LedgerCorrupt(
            f"{entry.type} of client {entry.client_id} applied to account "
            f"{account.client_id} (seq {account.seq})"
        )
    if entry.seq != account.seq + 1:
        raise LedgerCorrupt(f"client {entry.client_id}: seq {entry.seq} follows {account.seq}")
    if entry.prev_hash != account.last_hash:
        raise LedgerCorrupt(
            f"client {entry.client_id} seq {entry.seq}: prev_hash does not match the hash of "
            f"seq {account.seq}"
        )
    changes: dict[str, object] = {"seq": entry.seq}
    balance = account.balance
    match entry:
        case TokensCredited():
            balance += entry.tokens
            changes["tokens_credited"] = account.tokens_credited + entry.tokens
        case TokensCharged():
            balance -= entry.tokens
            changes["tokens_charged"] = account.tokens_charged + entry.tokens
            changes["memes_requested"] = account.memes_requested + 1
        case MemeRejected():
            changes["memes_requested"] = account.memes_requested + 1
        case MemeDelivered():
            changes["memes_delivered"] = account.memes_delivered + 1
        case TokensRefunded():
            balance += entry.tokens
            changes["tokens_refunded"] = account.tokens_refunded + entry.tokens
        case SubscriptionChanged():
            changes["ai_active"] = entry.active
            changes["ai_until_ms"] = entry.until_ms
    if balance != entry.balance_after or balance < 0:
        raise LedgerCorrupt(
            f"client {entry.client_id} seq {entry.seq}: balance {balance}, "
            f"entry says {entry.balance_after}"
        )
    changes["balance"] = balance
    changes["last_hash"] = entry_hash(entry)
    return account.model_copy(update=changes)


# --- rules ----------------------------------------------------------------------------


def _meme_requested(state: StateView, event: MemeRequested, pricing: Pricing) -> Decision:
    account = state.account(event.client_id)
    if account is None:
        return _reply(
            event.reply_to, event.event_id, "rejected", reason=RejectReason.UNKNOWN_CLIENT
        )

    seen = state.request(event.client_id, event.request_id)
    if seen is not None:
        return _repeated_request(seen, event, account)

    kind: Kind = "ai" if account.ai_entitled(event.occurred_at_ms) else "standard"
    price = pricing.of(kind)
    if account.balance < price:
        rejected, account = _append(
            account,
            MemeRejected,
            event,
            0,
            request_id=event.request_id,
            reason=RejectReason.INSUFFICIENT_TOKENS,
        )
        record = RequestRecord(
            request_id=event.request_id,
            client_id=event.client_id,
            fingerprint=event.fingerprint,
            status="rejected",
            reject_reason=RejectReason.INSUFFICIENT_TOKENS,
        )
        return _reply(
            event.reply_to,
            event.event_id,
            "rejected",
            changes=Decision(entries=(rejected,), account=account, requests=(record,)),
            balance=account.balance,
            entry=rejected,
            reason=RejectReason.INSUFFICIENT_TOKENS,
        )

    charged, account = _append(
        account,
        TokensCharged,
        event,
        -price,
        request_id=event.request_id,
        tokens=price,
        kind=kind,
    )
    record = RequestRecord(
        request_id=event.request_id,
        client_id=event.client_id,
        fingerprint=event.fingerprint,
        status="charged",
        kind=kind,
        tokens=price,
        deadline_ms=event.deadline_ms,
        waiters=(Waiter(reply_to=event.reply_to, correlation_id=event.event_id),),
    )
    approved = MemeApproved(
        event_id=derived_id(event.event_id, "approved"),
        client_id=event.client_id,
        region=event.region,
        occurred_at_ms=event.occurred_at_ms,
        causation_id=event.request_id,
        request_id=event.request_id,
        kind=kind,
        lat=event.lat,
        lon=event.lon,
        query=event.query,
        deadline_ms=event.deadline_ms,
    )
    return Decision(entries=(charged,), account=account, requests=(record,), approved=approved)


def _repeated_request(seen: RequestRecord, event: MemeRequested, account: Account) -> Decision:
    if seen.fingerprint != event.fingerprint:
        return _reply(
            event.reply_to, event.event_id, "rejected", reason=RejectReason.IDEMPOTENCY_CONFLICT
        )
    if seen.status == "charged":
        # A redelivered input (same event id) is already waiting; beyond MAX_WAITERS a
        # retry gets no reply and its API answers 504 with the request id to poll.
        if len(seen.waiters) >= MAX_WAITERS or any(
            w.correlation_id == event.event_id for w in seen.waiters
        ):
            return NOTHING
        waiter = Waiter(reply_to=event.reply_to, correlation_id=event.event_id)
        return Decision(requests=(seen.model_copy(update={"waiters": (*seen.waiters, waiter)}),))
    return Decision(
        replies=((event.reply_to, _final_reply(seen, event.event_id, account.balance)),)
    )


def _final_reply(record: RequestRecord, correlation_id: str, balance: int) -> Reply:
    match record.status:
        case "delivered":
            return Reply(
                correlation_id=correlation_id,
                outcome="delivered",
                balance=balance,
                entry=record.meme,
                caption=record.caption,
            )
        case "refunded":
            return Reply(
                correlation_id=correlation_id,
                outcome="refunded",
                balance=balance,
                reason=record.refund_reason,
            )
        case _:
            return Reply(
                correlation_id=correlation_id,
                outcome="rejected",
                balance=balance,
                reason=record.reject_reason,
            )


def _meme_generated(state: StateView, event: MemeGenerated) -> Decision:
    record, account = _open_request(state, event.client_id, event.request_id)
    if record is None or account is None:
        return NOTHING
    delivered, account = _append(
        account,
        MemeDelivered,
        event,
        0,
        request_id=event.request_id,
        meme_id=event.meme_id,
        kind=event.kind,
        template=event.template,
        image_key=event.image_key,
    )
    ended = record.model_copy(
        update={"status": "delivered", "meme": delivered, "caption": event.caption, "waiters": ()}
    )
    replies = tuple(
        (
            w.reply_to,
            Reply(
                correlation_id=w.correlation_id,
                outcome="delivered",
                balance=account.balance,
                entry=delivered,
                caption=event.caption,
            ),
        )
        for w in record.waiters
    )
    return Decision(entries=(delivered,), account=account, requests=(ended,), replies=replies)


def _end_with_refund(
    state: StateView, cause: MemeFailed | Expire, reason: RefundReason, cause_id: str, now_ms: int
) -> Decision:
    record, account = _open_request(state, cause.client_id, cause.request_id)
    if record is None or account is None:
        return NOTHING
    if isinstance(cause, Expire) and cause.now_ms < record.deadline_ms:
        return NOTHING  # an early timer: the outcome may still come
    refunded, account = _append_at(
        account,
        TokensRefunded,
        cause_id,
        cause.request_id,
        cause.region,
        now_ms,
        record.tokens,
        request_id=cause.request_id,
        tokens=record.tokens,
        reason=reason,
    )
    ended = record.model_copy(update={"status": "refunded", "refund_reason": reason, "waiters": ()})
    replies = tuple(
        (
            w.reply_to,
            Reply(
                correlation_id=w.correlation_id,
                outcome="refunded",
                balance=account.balance,
                entry=refunded,
                reason=reason,
            ),
        )
        for w in record.waiters
    )
    return Decision(entries=(refunded,), account=account, requests=(ended,), replies=replies)


def _open_request(
    state: StateView, client_id: str, request_id: str
) -> tuple[RequestRecord | None, Account | None]:
    """The request if it is charged and still waiting for its one outcome."""
    record = state.request(client_id, request_id)
    if record is None or record.status != "charged":
        return None, None
    return record, state.account(client_id)


def _tokens_purchased(state: StateView, event: TokensPurchased) -> Decision:
    account = state.account(event.client_id)
    if account is None:
        return _reply(
            event.reply_to,
            event.event_id,
            "purchase_rejected",
            reason=PurchaseRejectReason.UNKNOWN_CLIENT,
        )
    seen = state.purchase(event.client_id, event.purchase_id)
    if seen is not None:
        if seen.tokens != event.tokens:
            return _reply(
                event.reply_to,
                event.event_id,
                "purchase_rejected",
                balance=account.balance,
                reason=PurchaseRejectReason.PURCHASE_CONFLICT,
            )
        return _reply(
            event.reply_to, event.event_id, "credited", balance=account.balance, entry=seen.credited
        )
    credited, account = _append(
        account,
        TokensCredited,
        event,
        event.tokens,
        purchase_id=event.purchase_id,
        tokens=event.tokens,
    )
    purchase = PurchaseRecord(
        purchase_id=event.purchase_id,
        client_id=event.client_id,
        tokens=event.tokens,
        credited=credited,
    )
    return _reply(
        event.reply_to,
        event.event_id,
        "credited",
        changes=Decision(entries=(credited,), account=account, purchase=purchase),
        balance=account.balance,
        entry=credited,
    )


def _client_registered(state: StateView, event: ClientRegistered) -> Decision:
    account = state.account(event.client_id)
    if account is not None:
        return _reply(
            event.reply_to,
            event.event_id,
            "registered",
            balance=account.balance,
            account=account.view(),
        )
    opened = AccountOpened(
        event_id=derived_id(event.event_id, 1),
        client_id=event.client_id,
        region=event.region,
        occurred_at_ms=event.occurred_at_ms,
        causation_id=event.event_id,
        seq=1,
        balance_after=0,
        api_key_sha256=event.api_key_sha256,
    )
    account = evolve(None, opened)
    return _reply(
        event.reply_to,
        event.event_id,
        "registered",
        changes=Decision(entries=(opened,), account=account),
        balance=0,
        entry=opened,
        account=account.view(),
    )


def _subscription_requested(state: StateView, event: SubscriptionRequested) -> Decision:
    account = state.account(event.client_id)
    if account is None:
        return _reply(event.reply_to, event.event_id, "not_found")
    changed, account = _append(
        account,
        SubscriptionChanged,
        event,
        0,
        active=event.active,
        until_ms=event.until_ms if event.active else None,
    )
    return _reply(
        event.reply_to,
        event.event_id,
        "subscription",
        changes=Decision(entries=(changed,), account=account),
        balance=account.balance,
        entry=changed,
        account=account.view(),
    )


ERASE_BATCH = 500  # request records per ErasureRequested: bounds a transaction and a reply


def _erasure_requested(state: StateView, event: ErasureRequested) -> Decision:
    """Erase the captions of one batch of the client's request records.

    Balances, entries and the hash chain are untouched; a ``PersonalDataErased`` entry
    records the batch if it erased anything. The reply lists the image of every
    delivered request in the batch, erased now or before, so that a repeated erasure
    deletes images a crashed caller had not deleted yet.
    """
    account = state.account(event.client_id)
    if account is None:
        return _reply(event.reply_to, event.event_id, "not_found")
    # One record past the batch says whether another batch follows.
    read = list(islice(state.requests_of(event.client_id, event.after_request_id), ERASE_BATCH + 1))
    seen, more = read[:ERASE_BATCH], len(read) > ERASE_BATCH
    erased = tuple(r.model_copy(update={"caption": None}) for r in seen if r.caption is not None)
    view = ErasureView(
        requests_seen=len(seen),
        requests_erased=len(erased),
        image_keys=tuple(r.meme.image_key for r in seen if r.meme is not None),
        in_flight=sum(r.status == "charged" for r in seen),
        next_after_request_id=seen[-1].request_id if more else None,
    )
    if not erased:
        return _reply(
            event.reply_to, event.event_id, "erased", balance=account.balance, erasure=view
        )
    entry, account = _append(
        account,
        PersonalDataErased,
        event,
        0,
        requests_erased=len(erased),
        first_request_id=erased[0].request_id,
        last_request_id=erased[-1].request_id,
    )
    return _reply(
        event.reply_to,
        event.event_id,
        "erased",
        changes=Decision(entries=(entry,), account=account, requests=erased),
        balance=account.balance,
        entry=entry,
        erasure=view,
    )


# --- helpers --------------------------------------------------------------------------


def _append(
    account: Account, entry_type: type, cause: InputEvent, delta: int, **fields: object
) -> tuple[LedgerEntryUnion, Account]:
    return _append_at(
        account,
        entry_type,
        cause.event_id,
        getattr(cause, "request_id", None) or cause.event_id,
        cause.region,
        cause.occurred_at_ms,
        delta,
        **fields,
    )


def _append_at(
    account: Account,
    entry_type: type,
    cause_id: str,
    causation_id: str,
    region: str,
    now_ms: int,
    delta: int,
    **fields: object,
) -> tuple[LedgerEntryUnion, Account]:
    entry = entry_type(
        event_id=derived_id(cause_id, account.seq + 1),
        client_id=account.client_id,
        region=region,
        occurred_at_ms=now_ms,
        causation_id=causation_id,
        seq=account.seq + 1,
        balance_after=account.balance + delta,
        prev_hash=account.last_hash,
        **fields,
    )
    return entry, evolve(account, entry)


def _reply(
    reply_to: int,
    correlation_id: str,
    outcome: str,
    *,
    changes: Decision = NOTHING,
    **fields: object,
) -> Decision:
    """``changes`` plus the one reply that answers the input."""
    reply = Reply(correlation_id=correlation_id, outcome=outcome, **fields)
    return dataclasses.replace(changes, replies=((reply_to, reply),))
