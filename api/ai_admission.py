"""Admission of AI memes: their excess is refused at the API, at once and uncharged.

The AI pools are the first part of the service to saturate (an AI meme costs several
times the CPU of a standard one). Without a bound of their own, the excess AI requests
were charged, waited in Kafka for a pool, were failed by the pool's wait bound
(``ai_max_wait_ms``) and refunded: a 502 after ~1.5 s, three transactions and a render
slot spent on a request that was never going to be served. Here an API process keeps at
most ``api_max_ai_in_flight`` AI memes waiting; the next is answered 503 ``overloaded``
with Retry-After before its event is appended, like the process-wide limit
(``KafkaBridge.call``), while standard memes go on.

Which kind a request is, only the ledger decides (from the subscription it holds). The
API learns each client's kind from what it was answered: the kind of its last meme, and
the subscription it last switched through this process. That is enough for admission: a
client who just subscribed is counted as standard until its first AI meme comes back, one
who left as AI until its next meme, and a request admitted on a stale guess is still
decided and charged by the ledger as always. Only the AI clients are remembered, at most
``CAPACITY`` of them, the least recently seen forgotten first (then counted as standard).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from api.errors import Overloaded
from api.metrics import Metrics
from schemas.events import Kind

CAPACITY = 100_000


class AiAdmission:
    def __init__(self, limit: int, metrics: Metrics, capacity: int = CAPACITY) -> None:
        self.limit = limit
        self.metrics = metrics
        self.capacity = capacity
        self.in_flight = 0  # AI memes this process is waiting on (event loop only)
        self._ai_clients: OrderedDict[str, None] = OrderedDict()  # least recent first
        metrics.ai_waiting.set_function(lambda: self.in_flight)  # read at scrape time

    def is_ai(self, client_id: str) -> bool:
        return client_id in self._ai_clients

    @contextmanager
    def admit(self, client_id: str) -> Iterator[None]:
        """Around a meme request's ledger call: raises ``Overloaded`` for a client known
        as AI while ``limit`` AI memes are waiting."""
        if not self.is_ai(client_id):
            yield
            return
        if self.in_flight >= self.limit:
            self.metrics.overloaded.labels(limit="ai").inc()
            raise Overloaded(
                f"{self.in_flight} AI memes are being made; retry after Retry-After seconds"
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def learn(self, client_id: str, kind: Kind) -> None:
        """What the ledger answered this client: its meme's kind, or its subscription."""
        if kind == "standard":
            self._ai_clients.pop(client_id, None)
            return
        self._ai_clients[client_id] = None
        self._ai_clients.move_to_end(client_id)
        if len(self._ai_clients) > self.capacity:
            self._ai_clients.popitem(last=False)
