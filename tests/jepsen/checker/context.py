"""What every check reads (the log, our fold of it, the history) and where it reports."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tests.jepsen.checker.fold import Fold, Request
from tests.jepsen.checker.log import Log
from tests.jepsen.checker.model import Problems
from tests.jepsen.checker.ops import Logical


@dataclass
class Context:
    log: Log
    fold: Fold
    ops: dict[str, Logical]
    problems: Problems
    stats: Counter[str]

    def request(self, client_id: str, request_id: str) -> Request:
        return self.fold.requests.get((client_id, request_id)) or Request(client_id, request_id)

    def clients(self) -> set[str]:
        return {op.client_id for op in self.ops.values() if op.client_id}
