"""Final answers of meme requests this API instance has given, for idempotent retries.

A request's final outcome (a meme, rejected for want of tokens, refunded) never
changes: the ledger answers every later retry with it. So a retry under the same
``Idempotency-Key`` that reaches the instance which gave the answer is answered from
here, without a round trip through the log, and is answered even while the processor
instance that owns the client restarts. A retry that reaches another instance goes to
the ledger as before.

Only keyed requests are kept (without a key a retry is a new request). Bounded by age
(``TTL_MS``) and by count, oldest first: retries come within seconds, and the caption is
the client's personal data, so an answer is not kept longer than a retry needs it. Each
``put`` drops what has outlived the TTL, so a quiet instance keeps nothing old either.
``forget_client`` drops a client's answers when its personal data is erased through
this instance.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from schemas.events import RejectReason, Reply

CAPACITY = 50_000
TTL_MS = 60_000


@dataclass(frozen=True, slots=True)
class SettledAnswer:
    client_id: str
    fingerprint: str
    reply: Reply
    at_ms: int


def is_final(reply: Reply) -> bool:
    """An outcome every later retry of the request gets too. A meme its generator told
    ("made") is one: the ledger delivers that very meme (or, in the rare free-meme case,
    refunds it after the client had it, and the client keeps the meme it was told). A
    rejection for an unknown client or a conflict is about the attempt, not the request,
    and is not kept."""
    if reply.outcome in ("delivered", "made", "refunded"):
        return True
    return reply.outcome == "rejected" and reply.reason == RejectReason.INSUFFICIENT_TOKENS


class SettledRequests:
    def __init__(self, capacity: int = CAPACITY, ttl_ms: int = TTL_MS) -> None:
        self.capacity = capacity
        self.ttl_ms = ttl_ms
        self._answers: OrderedDict[str, SettledAnswer] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, request_id: str, now_ms: int) -> SettledAnswer | None:
        settled = self._answers.get(request_id)
        if settled is None:
            return None
        if now_ms - settled.at_ms > self.ttl_ms:
            del self._answers[request_id]
            return None
        return settled

    def put(
        self, request_id: str, client_id: str, fingerprint: str, reply: Reply, now_ms: int
    ) -> None:
        if not is_final(reply):
            return
        self._answers[request_id] = SettledAnswer(client_id, fingerprint, reply, now_ms)
        self._answers.move_to_end(request_id)
        answers = self._answers
        while len(answers) > self.capacity or (
            answers and now_ms - next(iter(answers.values())).at_ms > self.ttl_ms
        ):
            answers.popitem(last=False)

    def forget_client(self, client_id: str) -> None:
        """Erasure is rare; a scan of at most ``capacity`` answers is fine for it."""
        for request_id in [r for r, s in self._answers.items() if s.client_id == client_id]:
            del self._answers[request_id]
