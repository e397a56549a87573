"""What the auditor routes read: committed records only, from the start of the log.

Cost, on purpose: the reconciliation reads every partition of ``<region>.ledger``,
``<region>.purchases`` and ``<region>.requests`` from offset 0 to the end, in a worker
thread, with ``read_committed``; a client's page of its ledger reads the one ledger
partition that holds the client (``core.topics.key_partition``) from its start. That is
the simplest reader that is obviously correct, and it is fine for an auditor's
occasional question on a log of modest size. It is not fine for dashboards or large
logs: a production service would fold the ledger topic into an index (client id + seq
-> offset, and per-client totals) maintained by a consumer of the topic, or would export
the ledger to an analytics store, and answer from that.

The key of every topic is the client id, so the ledger reader skips other clients'
records by key without parsing them.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import ValidationError

from core.settings import Settings
from core.topic_reader import read_topic
from core.topics import Topics
from ledger.reconcile import Reconciliation, gather, reconcile
from schemas.events import InputEvent, LedgerEntryUnion, parse_entry, parse_input


def ledger_entries(settings: Settings, client_id: str | None = None) -> Iterator[LedgerEntryUnion]:
    """Every committed entry of the ledger (of one client if named), in log order."""
    key = client_id.encode() if client_id is not None else None
    for msg in read_topic(settings, Topics(settings.region).ledger, key=key):
        if key is None or msg.key() == key:
            yield parse_entry(msg.value() or b"")


def client_ledger(settings: Settings, client_id: str) -> list[LedgerEntryUnion]:
    """One client's entries in seq order (one partition holds them all, in order)."""
    return sorted(ledger_entries(settings, client_id), key=lambda e: e.seq)


def received_inputs(settings: Settings) -> Iterator[InputEvent]:
    """The purchases and requests received, committed, in each topic's order.

    ``<region>.requests`` has the default retention: requests older than it are no longer
    "received", only charged or rejected in the ledger.
    """
    topics = Topics(settings.region)
    for topic in (topics.purchases, topics.requests):
        for msg in read_topic(settings, topic):
            try:
                yield parse_input(msg.value() or b"")
            except ValidationError:
                continue  # not an input of this version: nothing to reconcile


def reconciliation(settings: Settings) -> Reconciliation:
    """The reconciliation of every account (``ledger.reconcile``), from the whole log."""
    return reconcile(gather(ledger_entries(settings), received_inputs(settings)))
