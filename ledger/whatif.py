"""What-if pricing: the balances the ledger would show had a meme cost something else.

Pure: ledger entries in, per-client figures out; no I/O.

**Re-decided with the live fold.** The ledger records every input that changed an
account, in the order the processor decided it. ``input_of`` turns each entry
back into the input that caused it, and ``WhatIf`` feeds those inputs, in the same
order, to ``decide`` under the other ``Pricing``:

=========================================  ============================================
entry                                      input re-decided
=========================================  ============================================
``AccountOpened``                          ``ClientRegistered``
``TokensCredited``                         ``TokensPurchased``
``SubscriptionChanged``                    ``SubscriptionRequested``
``ApiKeyRotated``                          ``ApiKeyRotationRequested``
``TokensCharged``, ``MemeRejected``        ``MemeRequested``
``MemeDelivered``                          ``MemeGenerated``
``TokensRefunded`` (generator failed)      ``MemeFailed``
``TokensRefunded`` (deadline)              the deadline timer (``Expire``)
=========================================  ============================================

So every rule applies as it did live: a charge the new price makes unaffordable is a
rejection, and that request's later outcome changes nothing; a refund gives back what
the request was charged under the new price; the subscription decides the kind at the
request's time. Under the list price the re-decided ledger is the live one, entry for
entry in type, tokens and balance (a property test checks it on random histories); a
re-decided delivery is stamped at its reconstructed deadline, since the ledger does
not record deadlines and the fold judges a meme by its time against it.

One thing the ledger cannot know: the outcome of a request it rejected for want of
tokens that the new price makes affordable (it never reached a generator). Such a
request is counted in ``newly_charged`` and its charge stands, as if it was delivered.
Inputs that changed nothing live (repeats, queries, unknown clients) are not in the
ledger and are not needed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ledger.fold import Expire, Pricing
from ledger.memory import MemoryLedger
from ledger.state import request_key
from schemas.events import (
    KINDS,
    AccountOpened,
    ApiKeyRotated,
    ApiKeyRotationRequested,
    ClientRegistered,
    InputEvent,
    LedgerEntryUnion,
    MemeDelivered,
    MemeFailed,
    MemeGenerated,
    MemeRejected,
    MemeRequested,
    RefundReason,
    SubscriptionChanged,
    SubscriptionRequested,
    TokensCharged,
    TokensCredited,
    TokensPurchased,
    TokensRefunded,
)

_FINGERPRINT = "0" * 16  # re-decided requests are never repeats: any fingerprint will do


def parse_pricing(text: str) -> Pricing:
    """``"ai=2,standard=1"`` -> ``Pricing(standard=1, ai=2)``; a kind not named keeps
    the list price."""
    prices: dict[str, int] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        kind, sep, value = part.partition("=")
        kind = kind.strip()
        if not sep or kind not in KINDS:
            raise ValueError(f"expected kind=tokens with kind in {KINDS}, got {part!r}")
        try:
            prices[kind] = int(value)
        except ValueError:
            raise ValueError(f"a price is a whole number of tokens: {part!r}") from None
    if not prices:
        raise ValueError("no price given")
    return Pricing(**prices)


def input_of(entry: LedgerEntryUnion) -> InputEvent | Expire | None:
    """The input that caused ``entry``, as the fold needs it; None for an entry that
    no price can change."""
    envelope = {
        "event_id": entry.event_id,
        "client_id": entry.client_id,
        "region": entry.region,
        "occurred_at_ms": entry.occurred_at_ms,
    }
    match entry:
        case AccountOpened():
            return ClientRegistered(**envelope, api_key_sha256=entry.api_key_sha256, reply_to=0)
        case TokensCredited():
            return TokensPurchased(
                **envelope, purchase_id=entry.purchase_id, tokens=entry.tokens, reply_to=0
            )
        case ApiKeyRotated():
            return ApiKeyRotationRequested(
                **envelope, api_key_sha256=entry.api_key_sha256, reply_to=0
            )
        case SubscriptionChanged():
            return SubscriptionRequested(
                **envelope, active=entry.active, until_ms=entry.until_ms, reply_to=0
            )
        case TokensCharged() | MemeRejected():
            return MemeRequested(
                **envelope,
                request_id=entry.request_id,
                fingerprint=_FINGERPRINT,
                lat=0.0,
                lon=0.0,
                query="-",
                deadline_ms=0,  # so the recorded expiry is never early
                reply_to=0,
            )
        case MemeDelivered():
            # Delivered live, so made by its deadline: at the reconstructed request's
            # deadline (0), whatever the live time, so that the re-decision delivers it.
            return MemeGenerated(
                **{**envelope, "occurred_at_ms": 0},
                request_id=entry.request_id,
                meme_id=entry.meme_id,
                kind=entry.kind,
                template=entry.template,
                caption=entry.caption or "",
                image_key=entry.image_key,
            )
        case TokensRefunded():
            if entry.reason == RefundReason.DEADLINE_EXPIRED:
                return Expire(entry.client_id, entry.request_id, entry.region, entry.occurred_at_ms)
            # Refunded as failed live, so failed by its deadline: stamped at the
            # reconstructed deadline (0), as a delivery is. The fold reads no failure's kind.
            return MemeFailed(
                **{**envelope, "occurred_at_ms": 0},
                request_id=entry.request_id,
                kind="standard",
                error="-",
            )
    return None


@dataclass
class ClientWhatIf:
    client_id: str
    old_balance: int = 0
    new_balance: int = 0
    old_charged: int = 0  # tokens
    new_charged: int = 0
    old_refunded: int = 0
    new_refunded: int = 0
    requests_charged: int = 0  # charges the ledger recorded
    rejected: int = 0  # of those, rejected under the new price for insufficient tokens
    newly_charged: int = 0  # recorded rejections the new price makes affordable

    @property
    def difference(self) -> int:
        return self.new_balance - self.old_balance


@dataclass
class WhatIf:
    """Re-decides the inputs behind ledger entries under ``pricing``, entry by entry."""

    pricing: Pricing
    clients: dict[str, ClientWhatIf] = field(default_factory=dict)
    _ledger: MemoryLedger = field(init=False)

    def __post_init__(self) -> None:
        self._ledger = MemoryLedger(self.pricing, keep_entries=False)

    def apply(self, entry: LedgerEntryUnion) -> None:
        client = self.clients.get(entry.client_id)
        if client is None:
            if not isinstance(entry, AccountOpened):
                return  # a prefix that starts mid-client: nothing to compare against
            client = self.clients[entry.client_id] = ClientWhatIf(entry.client_id)
        client.old_balance = entry.balance_after
        event = input_of(entry)
        if event is None:
            return
        decision = self._ledger.handle(event)
        new = decision.entries[0] if decision.entries else None
        if new is not None:
            client.new_balance = new.balance_after
        match entry:
            case TokensCharged():
                client.old_charged += entry.tokens
                client.requests_charged += 1
                client.rejected += isinstance(new, MemeRejected)
            case MemeRejected():
                client.newly_charged += isinstance(new, TokensCharged)
            case TokensRefunded():
                client.old_refunded += entry.tokens
        match new:
            case TokensCharged():
                client.new_charged += new.tokens
            case TokensRefunded():
                client.new_refunded += new.tokens
        # A rejected request was a meme request: its entry names the request too.
        if isinstance(entry, TokensCharged | MemeRejected | MemeDelivered | TokensRefunded) and (
            isinstance(new, MemeRejected) or isinstance(entry, MemeDelivered | TokensRefunded)
        ):
            # Ended, or never started: no later input needs the record; drop it so a
            # long replay holds only the requests still open.
            self._ledger.records.pop(request_key(entry.client_id, entry.request_id), None)

    def apply_all(self, entries: Iterable[LedgerEntryUnion]) -> WhatIf:
        for entry in entries:
            self.apply(entry)
        return self

    def totals(self) -> ClientWhatIf:
        total = ClientWhatIf("TOTAL")
        for c in self.clients.values():
            total.old_balance += c.old_balance
            total.new_balance += c.new_balance
            total.old_charged += c.old_charged
            total.new_charged += c.new_charged
            total.old_refunded += c.old_refunded
            total.new_refunded += c.new_refunded
            total.requests_charged += c.requests_charged
            total.rejected += c.rejected
            total.newly_charged += c.newly_charged
        return total


CSV_HEADER = (
    "client_id,old_balance,new_balance,difference,old_charged,new_charged,"
    "old_refunded,new_refunded,requests_charged,rejected_under_new_price,newly_charged"
)


def csv_row(c: ClientWhatIf) -> str:
    return (
        f"{c.client_id},{c.old_balance},{c.new_balance},{c.difference},{c.old_charged},"
        f"{c.new_charged},{c.old_refunded},{c.new_refunded},{c.requests_charged},"
        f"{c.rejected},{c.newly_charged}"
    )
