"""What a decision is, and how the rules make ledger entries.

``Decision`` is what one input changes; ``evolve`` applies one ledger entry to an
account and is the only place a balance changes; ``append`` builds the next entry of an
account through ``evolve``, so every entry a rule decides replays to the same balance.
The rules (``ledger.request_rules``, ``ledger.account_rules``) and the entry point
(``ledger.fold``) are built on these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import msgspec

from core.ids import derived_id
from ledger.state import Account, Forgotten, PurchaseRecord, RequestRecord
from schemas.events import (
    AccountOpened,
    ApiKeyRotated,
    InputEvent,
    Kind,
    LedgerEntryUnion,
    MemeApproved,
    MemeDelivered,
    MemeRejected,
    PersonalDataErased,
    Reply,
    SubscriptionChanged,
    TokensCharged,
    TokensCredited,
    TokensRefunded,
    entry_hash,
)

# One entry type; the union spelled out because a TypeVar cannot be bound to
# ``LedgerEntryUnion`` (an ``Annotated`` discriminated union).
E = TypeVar(
    "E",
    AccountOpened,
    TokensCredited,
    TokensCharged,
    MemeRejected,
    MemeDelivered,
    TokensRefunded,
    SubscriptionChanged,
    PersonalDataErased,
    ApiKeyRotated,
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

DAY_MS = 86_400_000
# How long an ended request is remembered after its deadline: a retry under the same id
# within it gets the first outcome, after it the id is a new request (as payment APIs
# treat their idempotency keys). The processor passes the personal-data retention, which
# is never under a day; the audit relies on that floor (ledger.replay).
REMEMBER_MS = 7 * DAY_MS
MIN_REMEMBER_MS = DAY_MS


class LedgerCorrupt(Exception):
    """An entry does not follow from the account it is applied to."""


class StateView(Protocol):
    def account(self, client_id: str) -> Account | None: ...
    def request(self, client_id: str, request_id: str) -> RequestRecord | None: ...
    def purchase(self, client_id: str, purchase_id: str) -> PurchaseRecord | None: ...
    def requests_of(
        self, client_id: str, after_request_id: str = ""
    ) -> Iterator[RequestRecord]: ...
    def ended_by(self, since_ms: int, until_ms: int) -> Iterator[tuple[str, str, int]]: ...


@dataclass(frozen=True, slots=True)
class Expire:
    """Timer input: the request's deadline has passed without an outcome."""

    client_id: str
    request_id: str
    region: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class Forget:
    """Timer input: forget up to ``limit`` ended requests whose deadline is ``remember_ms``
    before ``now_ms``, earliest first, from the deadline ``since_ms`` on (the processor's
    cursor: what an earlier Forget covered is gone, and its deletes are not read again)."""

    now_ms: int
    limit: int
    since_ms: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """What one input changes. The processor writes all of it in one transaction."""

    entries: tuple[LedgerEntryUnion, ...] = ()
    account: Account | None = None
    requests: tuple[RequestRecord, ...] = ()
    purchase: PurchaseRecord | None = None
    approved: MemeApproved | None = None
    replies: tuple[tuple[int, Reply], ...] = ()
    forgotten: tuple[Forgotten, ...] = ()


NOTHING = Decision()


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
        case ApiKeyRotated():
            changes["api_key_sha256"] = entry.api_key_sha256
            changes["replaced_keys"] = (
                tuple((key.api_key_sha256, key.valid_until_ms) for key in entry.replaced_keys)
                or msgspec.UNSET
            )
    if balance != entry.balance_after or balance < 0:
        raise LedgerCorrupt(
            f"client {entry.client_id} seq {entry.seq}: balance {balance}, "
            f"entry says {entry.balance_after}"
        )
    changes["balance"] = balance
    changes["last_hash"] = entry_hash(entry)
    return msgspec.structs.replace(account, **changes)


def append(
    account: Account, entry_type: type[E], cause: InputEvent, delta: int, **fields: object
) -> tuple[E, Account]:
    """The account's next entry, caused by an input, and the account after it."""
    return append_at(
        account,
        entry_type,
        cause.event_id,
        getattr(cause, "request_id", None) or cause.event_id,
        cause.region,
        cause.occurred_at_ms,
        delta,
        **fields,
    )


def append_at(
    account: Account,
    entry_type: type[E],
    cause_id: str,
    causation_id: str,
    region: str,
    now_ms: int,
    delta: int,
    **fields: object,
) -> tuple[E, Account]:
    """The account's next entry with its id, time and cause given (a timer has no input)."""
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


def answer(
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
