"""Reconciliation: do the ledger's totals and ids agree with what was received?

Pure: the caller hands over the ledger's entries in log order and the inputs that were
received (purchases and requests); nothing here reads a topic. Per client, and in total:

- the identity ``credited - charged + refunded == balance`` holds;
- every credited purchase was received, and none is credited twice;
- every charged request has one outcome (``MemeRejected``, ``MemeDelivered`` or
  ``TokensRefunded``), never several. A charged request with no outcome yet is open,
  not wrong: it is in flight. A request id forgotten and used again (``ledger.replay``)
  is a new request with its own outcome.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from ledger.replay import Replay
from schemas.events import (
    InputEvent,
    LedgerEntryUnion,
    MemeDelivered,
    MemeRejected,
    MemeRequested,
    TokensCharged,
    TokensCredited,
    TokensPurchased,
    TokensRefunded,
)

MAX_IDS_LISTED = 100  # per list in the reconciliation; the counts are always complete


@dataclass
class ClientFacts:
    """What the logs say about one client, beyond its account's totals."""

    purchases_received: set[str] = field(default_factory=set)
    purchases_credited: Counter[str] = field(default_factory=Counter)
    requests_received: set[str] = field(default_factory=set)
    requests_charged: set[str] = field(default_factory=set)
    # request id -> number of outcomes: MemeRejected, MemeDelivered or TokensRefunded
    outcomes: Counter[str] = field(default_factory=Counter)


@dataclass
class Facts:
    replay: Replay
    clients: dict[str, ClientFacts]


def gather(entries: Iterable[LedgerEntryUnion], inputs: Iterable[InputEvent]) -> Facts:
    """Fold the ledger (``Replay``), then take purchase and request ids from the inputs.

    ``entries`` are read to the end before ``inputs`` is touched: an input of a client
    the ledger never knew was rejected before any entry, and is skipped.
    """
    replay = Replay()
    clients: dict[str, ClientFacts] = defaultdict(ClientFacts)
    for entry in entries:
        reused = replay.ids_reused
        replay.apply(entry)
        facts = clients[entry.client_id]
        match entry:
            case TokensCredited():
                facts.purchases_credited[entry.purchase_id] += 1
            # A forgotten request id started again is a new request: its outcomes count anew.
            case TokensCharged():
                facts.requests_charged.add(entry.request_id)
                if replay.ids_reused > reused:
                    facts.outcomes[entry.request_id] = 0
            case MemeRejected() if replay.ids_reused > reused:
                facts.outcomes[entry.request_id] = 1
            case MemeRejected() | MemeDelivered() | TokensRefunded():
                facts.outcomes[entry.request_id] += 1
    for event in inputs:
        if event.client_id not in replay.accounts:
            continue  # the ledger never knew this client: rejected before any entry
        match event:
            case TokensPurchased():
                clients[event.client_id].purchases_received.add(event.purchase_id)
            case MemeRequested():
                clients[event.client_id].requests_received.add(event.request_id)
    return Facts(replay=replay, clients=dict(clients))


class Identity(BaseModel):
    credited: int
    charged: int
    refunded: int
    balance: int
    holds: bool = Field(description="credited - charged + refunded == balance")


class ClientReconciliation(Identity):
    client_id: str
    purchases_received: int
    purchases_credited: int
    purchases_not_credited: list[str] = Field(
        description="Received on the purchases topic, no credit (conflict, or in flight)"
    )
    credits_without_purchase: list[str] = Field(description="Credited, never received")
    purchases_credited_twice: list[str]
    requests_received: int
    requests_open: list[str] = Field(description="Charged, no outcome yet (in flight)")
    requests_without_outcome: list[str] = Field(
        description="Received, neither charged nor rejected"
    )
    requests_with_several_outcomes: list[str]
    ok: bool


class Reconciliation(BaseModel):
    clients: list[ClientReconciliation]
    total: Identity
    ok: bool = Field(description="Every identity holds and no id is credited or ended twice")


def _ids(ids: Any) -> list[str]:
    return sorted(ids)[:MAX_IDS_LISTED]


def reconcile(facts: Facts) -> Reconciliation:
    rows = []
    for client_id, account in sorted(facts.replay.accounts.items()):
        c = facts.clients[client_id]
        credited_ids = set(c.purchases_credited)
        several = {r for r, n in c.outcomes.items() if n > 1}
        twice = {p for p, n in c.purchases_credited.items() if n > 1}
        without_purchase = credited_ids - c.purchases_received
        identity = (
            account.tokens_credited - account.tokens_charged + account.tokens_refunded
            == account.balance
        )
        rows.append(
            ClientReconciliation(
                client_id=client_id,
                credited=account.tokens_credited,
                charged=account.tokens_charged,
                refunded=account.tokens_refunded,
                balance=account.balance,
                holds=identity,
                purchases_received=len(c.purchases_received),
                purchases_credited=len(credited_ids),
                purchases_not_credited=_ids(c.purchases_received - credited_ids),
                credits_without_purchase=_ids(without_purchase),
                purchases_credited_twice=_ids(twice),
                requests_received=len(c.requests_received),
                requests_open=_ids(r for r in c.requests_charged if c.outcomes[r] == 0),
                requests_without_outcome=_ids(
                    r
                    for r in c.requests_received
                    if r not in c.requests_charged and c.outcomes[r] == 0
                ),
                requests_with_several_outcomes=_ids(several),
                ok=identity and not several and not twice and not without_purchase,
            )
        )
    credited = sum(r.credited for r in rows)
    charged = sum(r.charged for r in rows)
    refunded = sum(r.refunded for r in rows)
    balance = sum(r.balance for r in rows)
    total = Identity(
        credited=credited,
        charged=charged,
        refunded=refunded,
        balance=balance,
        holds=credited - charged + refunded == balance,
    )
    ok = total.holds and all(r.ok for r in rows) and not facts.replay.violations
    return Reconciliation(clients=rows, total=total, ok=ok)
