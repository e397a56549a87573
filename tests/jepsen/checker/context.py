"""What every check reads (the log, our fold of it, the history) and where it reports."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tests.jepsen.checker.fold import Fold, Request
from tests.jepsen.checker.log import Log
from tests.jepsen.checker.model import QUERY_PREFIX, Json, Problems
from tests.jepsen.checker.ops import Logical, index_keyed


@dataclass
class Context:
    log: Log
    fold: Fold
    ops: dict[str, Logical]
    problems: Problems
    stats: Counter[str]
    keyed: dict[tuple[str, str], Logical] = field(init=False)

    def __post_init__(self) -> None:
        self.keyed = index_keyed(self.ops)

    def request(self, client_id: str, request_id: str) -> Request:
        return self.fold.requests.get((client_id, request_id)) or Request(client_id, request_id)

    def meme_op(self, client_id: str, event: Json) -> Logical | None:
        """The history's meme op of ``client_id`` that this ``MemeRequested`` records:
        by the request id its Idempotency-Key gives, or by its query
        ``QUERY_PREFIX + logical``."""
        op = self.keyed.get((client_id, event["request_id"]))
        if op is None and event["query"].startswith(QUERY_PREFIX):
            op = self.ops.get(event["query"].removeprefix(QUERY_PREFIX))
        return op if op and op.op == "meme" and op.client_id == client_id else None

    def clients(self) -> set[str]:
        return {op.client_id for op in self.ops.values() if op.client_id}
