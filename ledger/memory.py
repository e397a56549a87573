"""The ledger in memory: the fold plus a dict. Used by tests, replay and benchmarks."""

from __future__ import annotations

from ledger.fold import LIST_PRICE, Decision, Expire, Pricing, decide
from ledger.state import KeyValueState, record_writes, scan_dict
from schemas.events import InputEvent, LedgerEntryUnion


class MemoryLedger:
    def __init__(self, pricing: Pricing = LIST_PRICE, *, keep_entries: bool = True) -> None:
        self.pricing = pricing
        self.keep_entries = keep_entries
        self.records: dict[bytes, bytes] = {}
        self.state = KeyValueState(self.records.get, scan_dict(self.records))
        self.entries: list[LedgerEntryUnion] = []

    def handle(self, event: InputEvent | Expire) -> Decision:
        decision = decide(self.state, event, self.pricing)
        for key, value in record_writes(decision.account, decision.requests, decision.purchase):
            if value is None:
                self.records.pop(key, None)
            else:
                self.records[key] = value
        if self.keep_entries:
            self.entries.extend(decision.entries)
        return decision
