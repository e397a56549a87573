"""Rebuild balances from ledger entries and check what must hold for every client.

The fold here is ``evolve``, the same function the live processor builds every entry
with, so a replay from offset 0 reproduces the live accounts exactly. On top of the
balances, ``Replay`` checks the ledger's guarantees entry by entry:

- a request id is charged at most once, and a charged request ends at most once
  (``MemeDelivered`` or ``TokensRefunded``); an end without a charge is a violation;
- a rejected request is never charged;
- except that an ended request id is forgotten some days after its deadline (the
  fold's ``remember_ms``), and may then be charged or rejected again as a new request:
  allowed only once the earlier one has ended and ``MIN_REMEMBER_MS`` (a day, the least
  the service remembers) after it was charged or rejected;
- per client: credited - charged + refunded == balance, and charged - refunded ==
  delivered + still open (see ``conservation``);
- ``evolve`` itself rejects a seq gap, a wrong ``balance_after`` and a negative balance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ledger.decision import MIN_REMEMBER_MS
from ledger.fold import LedgerCorrupt, evolve
from ledger.state import Account
from schemas.events import (
    LedgerEntryUnion,
    MemeDelivered,
    MemeRejected,
    TokensCharged,
    TokensRefunded,
)


@dataclass
class Replay:
    accounts: dict[str, Account] = field(default_factory=dict)
    # (client id, request id) -> "charged" | "delivered" | "refunded" | "rejected"
    requests: dict[tuple[str, str], str] = field(default_factory=dict)
    # (client id, request id) -> occurred_at_ms of its last charge or rejection
    started_at: dict[tuple[str, str], int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    entries: int = 0
    ids_reused: int = 0  # forgotten request ids charged or rejected again

    def apply(self, entry: LedgerEntryUnion) -> None:
        self.entries += 1
        try:
            self.accounts[entry.client_id] = evolve(self.accounts.get(entry.client_id), entry)
        except LedgerCorrupt as exc:
            self.violations.append(str(exc))
            return
        match entry:
            case TokensCharged():
                self._transition(self._startable_from(entry), "charged", entry)
            case MemeRejected():
                self._transition(self._startable_from(entry), "rejected", entry)
            case MemeDelivered():
                self._transition(("charged",), "delivered", entry)
            case TokensRefunded():
                self._transition(("charged",), "refunded", entry)

    def apply_all(self, entries: Iterable[LedgerEntryUnion]) -> Replay:
        for entry in entries:
            self.apply(entry)
        return self

    def _startable_from(self, entry: TokensCharged | MemeRejected) -> tuple[str | None, ...]:
        """What a request may be in before it is charged or rejected: nothing, or, a
        day after it started, ended (and forgotten: the id is a new request)."""
        started = self.started_at.get((entry.client_id, entry.request_id))
        if started is not None and entry.occurred_at_ms - started >= MIN_REMEMBER_MS:
            return (None, "delivered", "refunded", "rejected")
        return (None,)

    def _transition(
        self,
        allowed_from: tuple[str | None, ...],
        to: str,
        entry: TokensCharged | MemeRejected | MemeDelivered | TokensRefunded,
    ) -> None:
        key = (entry.client_id, entry.request_id)  # request ids are scoped per client
        current = self.requests.get(key)
        if current not in allowed_from:
            self.violations.append(
                f"request {entry.request_id}: {entry.type} (seq {entry.seq} of client "
                f"{entry.client_id}) after {current or 'nothing'}"
            )
            return
        self.requests[key] = to
        if to in ("charged", "rejected"):
            self.started_at[key] = entry.occurred_at_ms
            self.ids_reused += current is not None

    def open_requests(self) -> set[tuple[str, str]]:
        return {r for r, status in self.requests.items() if status == "charged"}

    def conservation(self) -> list[str]:
        """Per-client identities that must hold on any prefix of the ledger."""
        problems = []
        for account in self.accounts.values():
            expected = account.tokens_credited - account.tokens_charged + account.tokens_refunded
            if expected != account.balance:
                problems.append(
                    f"client {account.client_id}: credited - charged + refunded "
                    f"= {expected}, balance {account.balance}"
                )
        return problems
