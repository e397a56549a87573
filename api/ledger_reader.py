"""What the auditor routes read: whole topics, committed only, from the start.

Cost, on purpose: every call reads every partition of ``<region>.ledger`` (and, for the
reconciliation, ``<region>.purchases`` and ``<region>.requests``) from offset 0 to the
end, in a worker thread, with ``read_committed``. A client's page of its ledger costs a
scan of the whole log. That is the simplest reader that is obviously correct, and it is
fine for an auditor's occasional question on a log of modest size. It is not fine for
dashboards or large logs: a production service would fold the ledger topic into an
index (client id + seq -> offset, and per-client totals) maintained by a consumer of the
topic, or would export the ledger to an analytics store, and answer from that.

The key of every topic is the client id, so the ledger reader skips other clients'
records by key without parsing them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydantic import ValidationError

from core.settings import Settings
from core.topic_reader import read_topic
from core.topics import Topics
from ledger.replay import Replay
from schemas.events import (
    LedgerEntryUnion,
    MemeDelivered,
    MemeRejected,
    MemeRequested,
    TokensCharged,
    TokensCredited,
    TokensPurchased,
    TokensRefunded,
    parse_entry,
    parse_input,
)


def ledger_entries(settings: Settings, client_id: str | None = None) -> Iterator[LedgerEntryUnion]:
    """Every committed entry of the ledger (of one client if named), in log order."""
    key = client_id.encode() if client_id is not None else None
    for msg in read_topic(settings, Topics(settings.region).ledger):
        if key is None or msg.key() == key:
            yield parse_entry(msg.value())


def client_ledger(settings: Settings, client_id: str) -> list[LedgerEntryUnion]:
    """One client's entries in seq order (one partition holds them all, in order)."""
    return sorted(ledger_entries(settings, client_id), key=lambda e: e.seq)


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


def reconciliation_facts(settings: Settings) -> Facts:
    """Fold the ledger (``Replay``) and gather purchase and request ids from the inputs.

    ``<region>.requests`` has the default retention: requests older than it are no longer
    "received", only charged or rejected in the ledger.
    """
    topics = Topics(settings.region)
    replay = Replay()
    clients: dict[str, ClientFacts] = defaultdict(ClientFacts)
    for entry in ledger_entries(settings):
        replay.apply(entry)
        facts = clients[entry.client_id]
        match entry:
            case TokensCredited():
                facts.purchases_credited[entry.purchase_id] += 1
            case TokensCharged():
                facts.requests_charged.add(entry.request_id)
            case MemeRejected() | MemeDelivered() | TokensRefunded():
                facts.outcomes[entry.request_id] += 1
    for topic in (topics.purchases, topics.requests):
        for msg in read_topic(settings, topic):
            try:
                event = parse_input(msg.value())
            except ValidationError:
                continue  # not an input of this version: nothing to reconcile
            if event.client_id not in replay.accounts:
                continue  # the ledger never knew this client: rejected before any entry
            match event:
                case TokensPurchased():
                    clients[event.client_id].purchases_received.add(event.purchase_id)
                case MemeRequested():
                    clients[event.client_id].requests_received.add(event.request_id)
    return Facts(replay=replay, clients=dict(clients))
