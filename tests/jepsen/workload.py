"""The workload: clients, purchases and ``GET /memes`` at a target rate, every attempt in
the history.

Phases, each an ``async`` method run by ``tests.jepsen.run``:

1. ``setup``: N clients registered and credited; a fifth of them subscribe to Memes AI
   (their memes go to the AI pool). In faults mode a quarter of them get only a few
   tokens, so 402s happen.
2. ``load``: open loop. Meme requests are scheduled by time (``i / rate``), never by the
   previous answer, so a stalled service cannot slow the load down and hide its queue;
   the generator's own lag (actual send - scheduled instant) is measured and reported.
   Purchases are interleaved (one per ``PURCHASE_EVERY_S``), some sent twice with the
   same ``purchase_id``: a duplicate delivery from billing; in faults mode, key rotations
   (one per ``ROTATE_EVERY_S``): billing replaces a client's API key while its memes are
   in flight, most with a grace for the old key (``ROTATE_GRACE_S``), the others as for
   a leaked key.
3. ``settle``: every request the service named (a 503, 504 or 409 body carries its
   ``request_id``) and that has no final outcome yet is looked up until it has one.
4. ``final_mes``: one ``GET /v1/me`` per client.

Client behaviour (what a careful client does):

- some registrations carry an ``Idempotency-Key`` (billing's customer id) and are retried
  with it; one answered 409 ``already_registered`` (an earlier attempt opened the account,
  its answer was lost) gets its key by a rotation;
- a rotation is retried until it is confirmed (each call issues another key, and an
  unconfirmed one may still be decided); from its 201 on the client uses the new key. A
  request refused 401 with the client's current key (an unconfirmed rotation decided
  after the confirmed one) makes the client rotate again, as the API tells it to;
- most meme requests carry an ``Idempotency-Key`` and are retried with the same key on a
  503 or 429, a 504 that does not say the token was refunded, a 409
  ``request_in_progress`` and a transport error, honouring ``Retry-After``: one logical
  op, attempts 1, 2, ...;
- the others carry no key; on a 503, a 429 or a transport error they are sent again as a new
  request, which without a key is a new logical op (its own query);
- after a 503 or 504 naming a request id, now and then a ``lookup``
  (``GET /v1/requests/{id}``).

Every meme's query is ``"jepsen " + logical``: the checker maps each ``MemeRequested`` in
the log back to its logical op through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import random
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from tests.jepsen.history import History
from tests.jepsen.region import GENERATOR_FAULT_QUERY

Mode = Literal["faults", "availability"]

HTTP_TIMEOUT_S = 15.0  # above the API's longest wait (deadline + refund grace + slack)
# httpcore's pool scans all its connections for every queued request, and all of them
# again for each idle one, whenever a request starts or ends: the cost of a request grows
# with the square of the pool. One pool of 2,000 connections took the runner's whole core
# and starved the service; eight of 250 (keeping 25 alive) still did in a long fault
# run with thousands of retries in flight: its timeouts fired 30-60 s late and its sends
# lagged 19 s (p99). Many small pools hold as many connections for a small cost.
HTTP_POOLS = 64
HTTP_POOL_CONNECTIONS = 32  # all kept alive: a closed one costs a new connection later
# Well below the API's keep-alive (api_keep_alive_s): a connection the API is closing for
# idleness is not reused, or a request sent as it closes ends "Server disconnected"
# without an answer.
HTTP_KEEPALIVE_S = 2.0
PURCHASE_EVERY_S = 1.0
ROTATE_EVERY_S = 2.0
ROTATE_GRACE_S = 20  # the old key's grace in most rotations: longer than most rotations take
ROTATE_GRACE_SHARE = 0.7  # the rest end the old key at once, as for a leaked one
KEYED_REGISTRATION_SHARE = 0.3
SETUP_CONCURRENCY = 24  # clients set up (and asked /v1/me at the end) at once
DUPLICATE_PURCHASE_SHARE = 0.2
KEYED_SHARE = 0.85
POOR_SHARE = 0.25  # faults mode: clients with too few tokens
AI_SHARE = 0.2  # clients on Memes AI, as in the realistic workload of the benchmarks
GENERATOR_FAULT_SHARE = 0.02  # faults mode: memes the generator fails (502, refund)
LOOKUP_SHARE = 0.3  # of the 503 / 504 answers that name a request
RETRY_BUDGET_S = 90.0  # a logical op gives up after this long (reported: gave_up)
MAX_ATTEMPTS = 60
MAX_RESENDS = 10  # unkeyed requests sent again as new ops, per original op
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 2.0
FINAL_LOOKUP_STATUSES = {"delivered", "refunded", "rejected"}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(eq=False)
class Account:
    client_id: str
    api_key: str  # the key from the last confirmed rotation, or the registration's
    poor: bool
    rotating: bool = False  # a rotation of its key is under way


@dataclass(frozen=True)
class Answer:
    """One attempt's result."""

    status: int | None  # None: transport error or timeout
    body: Any
    error: str | None
    retry_after_s: float | None

    def field(self, name: str) -> Any:
        return self.body.get(name) if isinstance(self.body, dict) else None

    def describe(self) -> str:
        """The status and error code (``503 overloaded``), or the transport error's type."""
        if self.status is None:
            return f"no answer: {(self.error or '').split(':')[0]}"
        code = self.field("error")
        return f"{self.status} {code}" if code else str(self.status)


@dataclass
class FirstAttempt:
    """A scheduled meme request's first attempt, for availability."""

    scheduled_ms: int
    latency_ms: int  # from the scheduled instant to the answer
    status: int | None


class WorkerIds:
    """A worker is one op at a time, as a Jepsen process: an op takes the lowest free id."""

    def __init__(self) -> None:
        self._free: list[int] = []
        self._next = 0

    def take(self) -> int:
        if self._free:
            return heapq.heappop(self._free)
        self._next += 1
        return self._next - 1

    def give(self, worker: int) -> None:
        heapq.heappush(self._free, worker)

    @property
    def most(self) -> int:
        return self._next


@dataclass
class Workload:
    base_url: str
    billing_token: str
    history: History
    seed: int
    rate: float
    clients: int
    seconds: float = 60.0
    mode: Mode = "faults"
    deadline_ms: int = 5_000
    say: Callable[[str], None] = print
    accounts: list[Account] = field(default_factory=list)
    first_attempts: list[FirstAttempt] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)
    gave_up: list[tuple[str, str]] = field(default_factory=list)  # (logical op, last answer)
    unknown_after_settle: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        # Faults mode only: a request sent with a key rotated away meanwhile is refused
        # 401, which availability would count against the service.
        self.rotates = self.mode == "faults"
        self.workers = WorkerIds()
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()  # read by the progress thread
        self._sequence: Counter[str] = Counter()
        # request id -> (account, logical) of requests named by the service, not final yet
        self.open_requests: dict[str, tuple[Account, str]] = {}
        self._request_of: dict[str, str] = {}  # logical op -> its request id, once learned
        self._tasks: set[asyncio.Task[None]] = set()
        self._pools: list[httpx.AsyncClient] = []
        self._sent = 0  # attempts sent: which pool the next one takes

    # --- what the runner reads ----------------------------------------------------------

    def counts(self) -> Counter[str]:
        """Attempts by ``"<op> <status>"`` (status ``error`` for transport errors)."""
        with self._counts_lock:
            return Counter(self._counts)

    # --- phases ----------------------------------------------------------------------

    async def setup(self) -> None:
        async with self._clients():
            expected = self.rate * self.seconds / max(1, self.clients)  # memes per client
            # Each client's calls in turn: with 8 clients at once, 40 took 8 s on three
            # brokers; 24 stays within an API process's in-flight share.
            gate = asyncio.Semaphore(SETUP_CONCURRENCY)
            on_ai: list[Account] = []

            async def one(i: int) -> None:
                async with gate:
                    poor = self.mode == "faults" and self.rng.random() < POOR_SHARE
                    account = await self._register(i, poor)
                    if poor:
                        tokens = self.rng.randint(1, 3)
                    elif self.mode == "availability":
                        tokens = int(expected * 3) + 50  # never a 402: it is not unavailability
                    else:
                        tokens = int(expected * 1.2) + 5
                    await self._purchase(account, tokens, self._purchase_id())
                    if self.rng.random() < AI_SHARE:
                        await self._subscribe(account)
                        on_ai.append(account)

            await asyncio.gather(*(one(i) for i in range(self.clients)))
        self.say(
            f"workload: {len(self.accounts)} clients registered and credited, "
            f"{len(on_ai)} of them on Memes AI"
        )

    async def load(
        self,
        seconds: float,
        on_schedule_end: Callable[[], None],
        go_on: Callable[[], bool] = lambda: False,
        most_seconds: float | None = None,
    ) -> None:
        """Send at ``rate`` for ``seconds``, and past them while ``go_on()`` (up to
        ``most_seconds``); then call ``on_schedule_end`` and wait for the ops still in
        flight (their retries end within ``RETRY_BUDGET_S``)."""
        most_seconds = most_seconds or seconds
        async with self._clients():
            loop = asyncio.get_running_loop()
            start = loop.time() + 0.05
            start_ms = now_ms() + 50
            memes = purchases = rotations = 0
            while True:
                meme_at = memes / self.rate
                purchase_at = purchases * PURCHASE_EVERY_S + 0.5
                rotate_at = rotations * ROTATE_EVERY_S + 0.75 if self.rotates else math.inf
                offset = min(meme_at, purchase_at, rotate_at)
                if offset >= most_seconds or (offset >= seconds and not go_on()):
                    break
                delay = start + offset - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if offset == meme_at:
                    memes += 1
                    self._spawn(self._scheduled_meme(start_ms + int(offset * 1000)))
                elif offset == purchase_at:
                    purchases += 1
                    self._spawn(self._interleaved_purchase())
                else:
                    rotations += 1
                    self._spawn(self._rotate(self.rng.choice(self.accounts)))
            if offset > seconds:
                self.say(f"load went on to {offset:.0f}s for the faults still to happen")
            on_schedule_end()
            await self._drain()

    async def settle(self, bound_s: float) -> None:
        """Look up every named, open request until it is final (a 404 now means it never
        reached the log: the API's appends time out at the deadline, long past)."""
        async with self._clients():
            give_up = time.monotonic() + bound_s
            gate = asyncio.Semaphore(16)

            async def look(request_id: str, account: Account, logical: str) -> None:
                async with gate:
                    await self._lookup(account, request_id, final_404=True)

            while self.open_requests and time.monotonic() < give_up:
                await asyncio.gather(
                    *(look(r, a, lg) for r, (a, lg) in list(self.open_requests.items()))
                )
                if self.open_requests:
                    await asyncio.sleep(1.0)
            self.unknown_after_settle = sorted(self.open_requests)

    async def final_mes(self) -> None:
        async with self._clients():
            gate = asyncio.Semaphore(SETUP_CONCURRENCY)

            async def one(account: Account) -> None:
                async with gate:
                    await self._me(account)

            await asyncio.gather(*(one(a) for a in self.accounts))

    # --- ops ---------------------------------------------------------------------------

    async def _register(self, i: int, poor: bool) -> Account:
        """Without a key not idempotent: a failed registration is tried again as a new op
        (a client that may exist, unused, is harmless). With billing's customer id as its
        ``Idempotency-Key``, retried as the same op; a 409 ``already_registered`` names
        the account an earlier attempt opened, whose key a rotation replaces."""
        body = {"name": f"jepsen-{i}"}
        if self.rng.random() < KEYED_REGISTRATION_SHARE:
            logical = self.logical("r")
            key = f"customer-{self.rng.getrandbits(64):016x}"
            answer = await self._retried(
                lambda attempt: self._op(
                    "register", logical, None, "POST", "/v1/clients", None, key, body,
                    attempt=attempt,
                ),
                _retry_call,
                logical,
            )  # fmt: skip
            return await self._registered(i, poor, answer)
        for _ in range(MAX_ATTEMPTS):
            logical = self.logical("r")
            answer = await self._op(
                "register", logical, None, "POST", "/v1/clients", None, None, body
            )
            if answer.status in (201, 202):
                return await self._registered(i, poor, answer)
            await asyncio.sleep(self._backoff(1, answer))
        raise RuntimeError(f"could not register client {i}")

    async def _registered(self, i: int, poor: bool, answer: Answer) -> Account:
        if answer.status not in (201, 202, 409) or answer.field("client_id") is None:
            raise RuntimeError(f"could not register client {i}: {answer.describe()}")
        account = Account(answer.field("client_id"), answer.field("api_key") or "", poor)
        if answer.status == 409:  # already_registered: its key was shown once, and lost
            await self._rotate(account)
            if account.api_key == "":
                raise RuntimeError(f"could not get a key for client {account.client_id}")
        self.accounts.append(account)
        return account

    async def _purchase(self, account: Account, tokens: int, purchase_id: str) -> None:
        """Idempotent by ``purchase_id``: retried as the same logical op."""
        logical = self.logical("p")
        body = {"purchase_id": purchase_id, "tokens": tokens}
        path = f"/v1/clients/{account.client_id}/purchases"
        await self._retried(
            lambda attempt: self._op(
                "purchase", logical, account, "POST", path, None, None, body, attempt=attempt
            ),
            _retry_call,
            logical,
        )

    async def _subscribe(self, account: Account) -> None:
        """Memes AI on: a PUT, so retried as the same logical op."""
        logical = self.logical("s")
        path = f"/v1/clients/{account.client_id}/subscription"
        await self._retried(
            lambda attempt: self._op(
                "subscribe", logical, account, "PUT", path, None, None, {}, attempt=attempt
            ),
            _retry_call,
            logical,
        )

    async def _rotate(self, account: Account) -> None:
        """A new API key, retried until one is confirmed; one rotation of an account at
        a time (a client waits for its own call)."""
        if account.rotating:
            return
        account.rotating = True
        try:
            logical = self.logical("k")
            path = f"/v1/clients/{account.client_id}/api-key"
            grace_s = ROTATE_GRACE_S if self.rng.random() < ROTATE_GRACE_SHARE else 0
            body = {"old_key_valid_for_s": grace_s}
            answer = await self._retried(
                lambda attempt: self._op(
                    "rotate", logical, account, "POST", path, None, None, body, attempt=attempt
                ),
                _retry_call,
                logical,
            )
            if answer.status == 201:
                account.api_key = answer.field("api_key")
        finally:
            account.rotating = False

    async def _interleaved_purchase(self) -> None:
        account = self.rng.choice(self.accounts)
        tokens = self.rng.randint(1, 5)
        purchase_id = self._purchase_id()
        if self.rng.random() < DUPLICATE_PURCHASE_SHARE:
            # Billing delivers it twice, the second while the first may be in flight.
            delay_s = self.rng.uniform(0.0, 0.3)
            self._spawn(self._later(delay_s, self._purchase(account, tokens, purchase_id)))
        await self._purchase(account, tokens, purchase_id)

    async def _scheduled_meme(self, scheduled_ms: int) -> None:
        self.lags_ms.append(now_ms() - scheduled_ms)
        account = self.rng.choice(self.accounts)
        keyed = self.rng.random() < KEYED_SHARE
        await self._meme(account, keyed, scheduled_ms, resends=0)

    async def _meme(
        self, account: Account, keyed: bool, scheduled_ms: int | None, resends: int
    ) -> None:
        logical = self.logical("m")
        if self.mode == "faults" and self.rng.random() < GENERATOR_FAULT_SHARE:
            logical += f"-{GENERATOR_FAULT_QUERY}"
        params = self.meme_params(logical)
        key = f"{logical}-{self.rng.getrandbits(48):012x}" if keyed else None

        async def attempt_once(attempt: int) -> Answer:
            api_key = account.api_key
            answer = await self._op(
                "meme", logical, account, "GET", "/memes", params, key, None, attempt=attempt
            )
            if _key_lost(account, api_key, answer):
                self._spawn(self._rotate(account))
            if attempt == 1 and scheduled_ms is not None:
                latency_ms = now_ms() - scheduled_ms
                self.first_attempts.append(FirstAttempt(scheduled_ms, latency_ms, answer.status))
            self._learn(account, logical, answer)
            return answer

        if keyed:
            await self._retried(attempt_once, _retry_keyed_meme, logical)
            return
        answer = await attempt_once(1)
        if (answer.status is None or answer.status in (429, 503)) and resends < MAX_RESENDS:
            # Without a key the service cannot tell a repeat: sending it again is a new
            # request, and may be charged again if the first one did reach the log.
            await asyncio.sleep(self._backoff(resends + 1, answer))
            await self._meme(account, keyed=False, scheduled_ms=None, resends=resends + 1)

    async def _lookup(self, account: Account, request_id: str, final_404: bool) -> None:
        logical = self.logical("l")
        path = f"/v1/requests/{request_id}"
        api_key = account.api_key
        answer = await self._op("lookup", logical, account, "GET", path, None, None, None)
        if _key_lost(account, api_key, answer):
            await self._rotate(account)  # settling looks again, with the new key
        final = answer.status == 200 and answer.field("status") in FINAL_LOOKUP_STATUSES
        if final or (answer.status == 404 and final_404):
            self.open_requests.pop(request_id, None)

    async def _me(self, account: Account) -> None:
        """The account's view; a key refused (see ``_meme``) is rotated first, once."""
        if (await self._me_once(account)).status == 401:
            await self._rotate(account)
            await self._me_once(account)

    async def _me_once(self, account: Account) -> Answer:
        logical = self.logical("me")
        return await self._retried(
            lambda attempt: self._op(
                "me", logical, account, "GET", "/v1/me", None, None, None, attempt=attempt
            ),
            _retry_call,
            logical,
        )

    # --- the bits every op shares -------------------------------------------------------

    async def _op(
        self,
        op: str,
        logical: str,
        account: Account | None,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        key: str | None,
        body: dict[str, Any] | None,
        attempt: int = 1,
    ) -> Answer:
        """One attempt: send, and record it in the history whatever happens."""
        assert self._pools, "send within _clients()"
        pool = self._pools[self._sent % len(self._pools)]
        self._sent += 1
        headers = {"Authorization": f"Bearer {account.api_key if account else ''}"}
        if op in ("register", "purchase", "subscribe", "rotate"):
            headers["Authorization"] = f"Bearer {self.billing_token}"
        if key is not None:
            headers["Idempotency-Key"] = key
        worker = self.workers.take()
        invoke_ms = now_ms()
        status: int | None = None
        parsed: Any = None
        error: str | None = None
        retry_after_s: float | None = None
        try:
            response = await pool.request(method, path, params=params, json=body, headers=headers)
            status = response.status_code
            try:
                parsed = response.json()
            except ValueError:
                parsed = None
            retry_after_s = _retry_after_s(response.headers.get("Retry-After"))
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self.workers.give(worker)
        client_id = account.client_id if account else None
        if op == "register" and isinstance(parsed, dict):
            client_id = parsed.get("client_id")
        self.history.record(
            {
                "worker": worker,
                "op": op,
                "logical": logical,
                "attempt": attempt,
                "client_id": client_id,
                "invoke_ms": invoke_ms,
                "complete_ms": now_ms(),
                "method": method,
                "path": path,
                "params": params or {},
                "idempotency_key": key,
                "body": body,
                "status": status,
                "error": error,
                "response": parsed,
            }
        )
        self.tally(op, status)
        return Answer(status, parsed, error, retry_after_s)

    async def _retried(
        self,
        attempt_once: Callable[[int], Awaitable[Answer]],
        retry: Callable[[Answer], bool],
        logical: str,
    ) -> Answer:
        """Attempts of one logical op until ``retry`` says no, or the budget is spent."""
        give_up = time.monotonic() + RETRY_BUDGET_S
        attempt = 1
        while True:
            answer = await attempt_once(attempt)
            if not retry(answer):
                return answer
            if attempt >= MAX_ATTEMPTS or time.monotonic() > give_up:
                self.gave_up.append((logical, answer.describe()))
                return answer
            await asyncio.sleep(self._backoff(attempt, answer))
            attempt += 1

    def note(self, account: Account, logical: str, answer: Answer) -> str | None:
        """Keep track of requests the service named and did not finish (``settle`` looks
        them up); returns the request id if this answer leaves it open."""
        request_id = answer.field("request_id") or self._request_of.get(logical)
        if request_id is None:
            return None
        self._request_of[logical] = request_id
        if _open_answer(answer):
            self.open_requests[request_id] = (account, logical)
            return str(request_id)
        if answer.status not in (None, 401):  # a 401 refused this attempt, not the request
            self.open_requests.pop(request_id, None)
        return None

    def tally(self, op: str, status: int | None) -> None:
        """Count one attempt, for ``counts()``."""
        with self._counts_lock:
            self._counts[f"{op} {status if status is not None else 'error'}"] += 1

    def _learn(self, account: Account, logical: str, answer: Answer) -> None:
        """``note``, and look some of the open ones up now."""
        request_id = self.note(account, logical, answer)
        if request_id is None or answer.status not in (503, 504):
            return
        if self.rng.random() < LOOKUP_SHARE:
            delay_s = self.rng.uniform(0.5, 3.0)
            self._spawn(self._later(delay_s, self._lookup(account, request_id, False)))

    def _backoff(self, attempt: int, answer: Answer) -> float:
        if answer.retry_after_s is not None:
            return answer.retry_after_s
        ceiling = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (attempt - 1))
        return self.rng.uniform(ceiling / 2, ceiling)

    def meme_params(self, logical: str) -> dict[str, Any]:
        """A meme request's query parameters: a point anywhere on Earth, and the query
        that names the logical op (``"jepsen " + logical``) for the checker."""
        return {
            "lat": round(self.rng.uniform(-90, 90), 5),
            "lon": round(self.rng.uniform(-180, 180), 5),
            "query": "jepsen " + logical,
        }

    def logical(self, prefix: str) -> str:
        """A new logical op id: ``prefix`` and a sequence number (``m000017``)."""
        self._sequence[prefix] += 1
        return f"{prefix}{self._sequence[prefix]:06d}"

    def _purchase_id(self) -> str:
        return f"jp-{self.rng.getrandbits(64):016x}"

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _later(delay_s: float, work: Awaitable[None]) -> None:
        await asyncio.sleep(delay_s)
        await work

    async def _drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    @contextlib.asynccontextmanager
    async def _clients(self) -> AsyncIterator[None]:
        """The connection pools of one phase (each phase runs in its own event loop)."""
        limits = httpx.Limits(
            max_connections=HTTP_POOL_CONNECTIONS,
            max_keepalive_connections=HTTP_POOL_CONNECTIONS,
            keepalive_expiry=HTTP_KEEPALIVE_S,
        )
        timeout = httpx.Timeout(HTTP_TIMEOUT_S, pool=HTTP_TIMEOUT_S)
        async with contextlib.AsyncExitStack() as stack:
            self._pools = [
                await stack.enter_async_context(
                    httpx.AsyncClient(base_url=self.base_url, limits=limits, timeout=timeout)
                )
                for _ in range(HTTP_POOLS)
            ]
            try:
                yield
            finally:
                self._pools = []


def _key_lost(account: Account, api_key: str, answer: Answer) -> bool:
    """The client's current key was refused: an unconfirmed rotation was decided after
    the confirmed one, or one is under way (``_rotate`` then does nothing). The API's
    advice is to rotate again."""
    return answer.status == 401 and account.api_key == api_key


def _retry_call(answer: Answer) -> bool:
    """Retried as it is (purchases, subscriptions, ``me``): refused, not recorded, or not
    answered by the deadline; each is idempotent by its id or a read."""
    return answer.status is None or answer.status in (429, 503, 504)


def _retry_keyed_meme(answer: Answer) -> bool:
    """Retried with the same key: anything that is not the request's final word."""
    return answer.status is None or _open_answer(answer)


def _open_answer(answer: Answer) -> bool:
    """The service has not given this request's final outcome (it may still be made)."""
    match answer.status:
        case 429 | 503:
            return True
        case 504:
            return answer.field("refunded") is not True
        case 409:
            return answer.field("error") == "request_in_progress"
    return False


def _retry_after_s(header: str | None) -> float | None:
    if header is None:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None  # an HTTP date: the API sends seconds; treat as absent
