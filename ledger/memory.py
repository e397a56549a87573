"""The ledger in memory: the fold plus a dict. Used by tests, replay and benchmarks."""

from __future__ import annotations

from ledger.fold import LIST_PRICE, REMEMBER_MS, Decision, Expire, Forget, Pricing, decide
from ledger.state import KeyValueState, record_writes, scan_dict
from schemas.events import InputEvent, LedgerEntryUnion


class MemoryLedger:
    def __init__(
        self,
        pricing: Pricing = LIST_PRICE,
        *,
        keep_entries: bool = True,
        remember_ms: int = REMEMBER_MS,
    ) -> None:
        self.pricing = pricing
        self.remember_ms = remember_ms
        self.keep_entries = keep_entries
        self.records: dict[bytes, bytes] = {}
        self.state = KeyValueState(self.records.get, scan_dict(self.records))
        self.entries: list[LedgerEntryUnion] = []

    def handle(self, event: InputEvent | Expire | Forget) -> Decision:
        decision = decide(self.state, event, self.pricing, self.remember_ms)
        writes = record_writes(
            decision.account, decision.requests, decision.purchase, decision.forgotten
        )
        for key, value in writes:
            if value is None:
                self.records.pop(key, None)
            else:
                self.records[key] = value
        if self.keep_entries:
            self.entries.extend(decision.entries)
        return decision
