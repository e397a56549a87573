"""What-if pricing: the balances the ledger would show had a meme cost something else.

Pure: ledger entries in, per-client figures out; no I/O.

**An approximation, on ledger entries.** The exact answer would re-decide the raw inputs
(``<region>.requests``, ``.purchases``, ``.outcomes``) with ``decide`` under the other
price, in the order the ledger recorded them. ``decide`` takes its price from the
constant ``ledger.fold.PRICE_TOKENS``, so until the price is a parameter of the fold,
this module re-prices what the ledger recorded instead, client by client, in ``seq``
order:

- ``TokensCredited`` adds its tokens, as recorded;
- ``TokensCharged`` costs ``pricing[kind]`` instead of its recorded tokens; the kind
  (standard or ai) is the one recorded, since the subscription does not depend on the
  price. If the re-priced balance is below the new price, the charge becomes a
  rejection for insufficient tokens (``rejected``), and that request's later
  ``MemeDelivered`` / ``TokensRefunded`` change nothing;
- ``TokensRefunded`` gives back what the request was charged under the new price;
- ``MemeRejected``, ``MemeDelivered``, ``AccountOpened``, ``SubscriptionChanged`` keep
  their (zero) effect on the balance.

What this does not capture: a request the ledger rejected for insufficient tokens stays
rejected even if it would have been affordable at a lower price (it was never sent to a
generator, so its outcome is unknown); and a client who would have been rejected might
in reality have bought tokens earlier or retried. Purchases, outcomes and their order
are taken as they happened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from schemas.events import (
    AccountOpened,
    LedgerEntryUnion,
    MemeDelivered,
    TokensCharged,
    TokensCredited,
    TokensRefunded,
)

KINDS = ("standard", "ai")


def parse_pricing(text: str) -> dict[str, int]:
    """``"ai=2,standard=1"`` -> ``{"ai": 2, "standard": 1}``; a kind not named keeps
    the price the ledger recorded for it (see ``WhatIf``)."""
    pricing: dict[str, int] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        kind, sep, value = part.partition("=")
        kind = kind.strip()
        if not sep or kind not in KINDS:
            raise ValueError(f"expected kind=tokens with kind in {KINDS}, got {part!r}")
        tokens = int(value)
        if tokens < 0:
            raise ValueError(f"a price cannot be negative: {part!r}")
        pricing[kind] = tokens
    if not pricing:
        raise ValueError("no price given")
    return pricing


@dataclass
class ClientWhatIf:
    client_id: str
    old_balance: int = 0
    new_balance: int = 0
    old_charged: int = 0  # tokens, net of nothing: what TokensCharged recorded
    new_charged: int = 0
    old_refunded: int = 0
    new_refunded: int = 0
    requests_charged: int = 0  # charges the ledger recorded
    rejected: int = 0  # of those, rejected under the new price for insufficient tokens

    @property
    def difference(self) -> int:
        return self.new_balance - self.old_balance


@dataclass
class WhatIf:
    """Folds ledger entries under ``pricing`` (kind -> tokens per meme)."""

    pricing: Mapping[str, int]
    clients: dict[str, ClientWhatIf] = field(default_factory=dict)
    # (client, request) -> tokens charged under the new price (0: rejected under it);
    # dropped when the request ends, so only open requests are held.
    _open: dict[tuple[str, str], int] = field(default_factory=dict)

    def apply(self, entry: LedgerEntryUnion) -> None:
        client = self.clients.get(entry.client_id)
        if client is None:
            if not isinstance(entry, AccountOpened):
                return  # a prefix that starts mid-client: nothing to compare against
            client = self.clients[entry.client_id] = ClientWhatIf(entry.client_id)
        client.old_balance = entry.balance_after
        match entry:
            case TokensCredited():
                client.new_balance += entry.tokens
            case TokensCharged():
                client.old_charged += entry.tokens
                client.requests_charged += 1
                price = self.pricing.get(entry.kind, entry.tokens)
                if client.new_balance >= price:
                    client.new_balance -= price
                    client.new_charged += price
                    self._open[(entry.client_id, entry.request_id)] = price
                else:
                    client.rejected += 1
                    self._open[(entry.client_id, entry.request_id)] = 0
            case TokensRefunded():
                client.old_refunded += entry.tokens
                price = self._open.pop((entry.client_id, entry.request_id), entry.tokens)
                client.new_balance += price
                client.new_refunded += price
            case MemeDelivered():
                self._open.pop((entry.client_id, entry.request_id), None)

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
        return total


CSV_HEADER = (
    "client_id,old_balance,new_balance,difference,old_charged,new_charged,"
    "old_refunded,new_refunded,requests_charged,rejected_under_new_price"
)


def csv_row(c: ClientWhatIf) -> str:
    return (
        f"{c.client_id},{c.old_balance},{c.new_balance},{c.difference},{c.old_charged},"
        f"{c.new_charged},{c.old_refunded},{c.new_refunded},{c.requests_charged},{c.rejected}"
    )
