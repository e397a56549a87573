"""The two clients: ``MemesClient`` (an API key: memes, balance, request outcomes) and
``BillingClient`` (the billing token: register, credit tokens, switch Memes AI).

Retries, the same for every call: a 503 and a 429 (``Retry-After`` honoured), a 504, a
409 ``request_in_progress`` and a lost connection or timeout are tried again, with
exponential backoff and full jitter (``RetryPolicy``), until ``max_attempts`` or the
time budget runs out; then the typed error is raised (``errors.py``). No other 4xx is
ever retried: the same request would get the same answer.

A retry is only safe when repeating the call cannot do the work twice. ``meme`` always
sends an ``Idempotency-Key`` (a random one if the caller gave none), so the service
answers a retry with the first result and charges once; a purchase is idempotent by its
``purchase_id``; reads and subscription changes repeat harmlessly. ``register`` is not
idempotent: it is retried only when the service certainly did not act (see its
docstring).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx

from maas_client.errors import (
    UNEXPECTED_RESPONSE,
    DeadlineExceeded,
    MaasError,
    RequestInProgress,
    TooManyRequests,
    Unavailable,
    Unreachable,
    error_for,
)
from maas_client.models import (
    Account,
    Credited,
    Meme,
    RegisteredClient,
    RequestStatus,
    RotatedKey,
    Subscription,
)
from maas_client.retry import RetryPolicy, parse_retry_after

T = TypeVar("T")

# Above the service's request deadline (5 s by default), so that its 504 arrives
# before our own timeout does.
DEFAULT_TIMEOUT_S = 30.0

# Failures after which the service may or may not have acted: a retry repeats the call.
_LOST_ANSWER = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
# Failures before the request left: the service never saw it.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def new_idempotency_key() -> str:
    """A fresh key in the service's id alphabet (``[A-Za-z0-9._:-]``, 128 at most)."""
    return uuid.uuid4().hex


class _Service:
    """What both clients share: the HTTP client, the credential and the retry loop."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float,
        retry: RetryPolicy,
        http: httpx.Client | None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._authorization = f"Bearer {token}"
        self._retry = retry
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout_s)
        self._rng = random.Random()

    def close(self) -> None:
        """Closes the HTTP client if this object made it; one passed in is the caller's."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | float] | None = None,
        json: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        """The answer of the first attempt that succeeds; raises the last error."""
        all_headers = {"Authorization": self._authorization, **(headers or {})}
        started_s = time.monotonic()
        failed_attempts = 0
        while True:
            try:
                response = self._http.request(
                    method, self._base_url + path, params=params, json=json, headers=all_headers
                )
            except _LOST_ANSWER as exc:
                error: MaasError = Unreachable(
                    f"{type(exc).__name__}: {exc}", request_sent=not isinstance(exc, _NEVER_SENT)
                )
                error.__cause__ = exc
            else:
                if response.is_success:
                    return response
                error = _error_from(response)
            failed_attempts += 1
            retryable = _retryable(error) if idempotent else _service_did_not_act(error)
            if not retryable:
                raise error
            elapsed_s = time.monotonic() - started_s
            retry_after_s = error.retry_after_s
            delay_s = self._retry.delay_s(failed_attempts, elapsed_s, retry_after_s, self._rng)
            if delay_s is None:
                raise error
            time.sleep(delay_s)

    @staticmethod
    def _parse(response: httpx.Response, build: Callable[[Any], T]) -> T:
        """The answer as a model; a body off the contract is a ``MaasError`` too."""
        try:
            return build(response.json())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MaasError(
                status=response.status_code,
                error=UNEXPECTED_RESPONSE,
                detail=f"{type(exc).__name__}: {exc}",
            ) from exc


def _retryable(error: MaasError) -> bool:
    return isinstance(
        error, Unreachable | Unavailable | DeadlineExceeded | RequestInProgress | TooManyRequests
    )


def _service_did_not_act(error: MaasError) -> bool:
    """True when the service certainly did not act: even a call that is not idempotent
    may be repeated. A 503 ``not_ready`` or ``overloaded`` and a 429 are answered before
    anything is appended; a ``kafka_unavailable`` may follow an append that did reach the
    log."""
    if isinstance(error, Unreachable):
        return not error.request_sent
    if isinstance(error, TooManyRequests):
        return True
    return isinstance(error, Unavailable) and error.error in ("not_ready", "overloaded")


def _error_from(response: httpx.Response) -> MaasError:
    try:
        body = response.json()
    except ValueError:
        body = None  # not JSON: a proxy's page, say; the status decides
    retry_after_s = parse_retry_after(response.headers.get("Retry-After"), time.time())
    return error_for(response.status_code, body if isinstance(body, dict) else {}, retry_after_s)


def _segment(value: str) -> str:
    # An id goes into the path as one segment, whatever it contains.
    return quote(value, safe="")


class MemesClient(_Service):
    """The client scope: ``MemesClient("http://localhost:8000", "mk_...")``.

    A context manager; ``http`` lets tests and callers bring their own ``httpx.Client``
    (a transport, proxies, TLS settings), which ``close`` then leaves open.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__(
            base_url, api_key, timeout_s=timeout_s, retry=retry or RetryPolicy(), http=http
        )

    def meme(self, lat: float, lon: float, query: str, idempotency_key: str | None = None) -> Meme:
        """One meme for one token. Give ``idempotency_key`` to make a later repeat of
        this call (after a crash, say) safe too; without one a random key still makes
        this call's own retries safe. Raises ``InsufficientTokens``, ``InvalidRequest``,
        ``Conflict`` (the key was used with other parameters), ...; every error carries
        the key it sent as ``idempotency_key``."""
        key = idempotency_key if idempotency_key is not None else new_idempotency_key()
        try:
            response = self._call(
                "GET",
                "/memes",
                params={"lat": lat, "lon": lon, "query": query},
                headers={"Idempotency-Key": key},
            )
        except MaasError as error:
            error.idempotency_key = key
            raise
        return self._parse(response, Meme.from_json)

    def me(self) -> Account:
        """Balance, usage and subscription, read after the caller's earlier requests."""
        return self._parse(self._call("GET", "/v1/me"), Account.from_json)

    def request(self, request_id: str) -> RequestStatus:
        """The outcome of one of the caller's meme requests (``NotFound`` if none)."""
        response = self._call("GET", f"/v1/requests/{_segment(request_id)}")
        return self._parse(response, RequestStatus.from_json)


class BillingClient(_Service):
    """The billing scope: ``BillingClient("http://localhost:8000", billing_token)``.

    A context manager; ``http`` as for ``MemesClient``.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__(
            base_url, token, timeout_s=timeout_s, retry=retry or RetryPolicy(), http=http
        )

    def register(self, name: str = "", idempotency_key: str | None = None) -> RegisteredClient:
        """Registers a client; its API key is in the answer and nowhere else.

        With ``idempotency_key`` (billing's own id for the client, say) the key names
        the account: the call is retried like any other, and never opens a second
        account. If an earlier call (or an attempt whose answer was lost) opened it, this
        raises ``AlreadyRegistered`` naming the client: ``rotate_api_key`` then issues its
        key.

        Without one, every call that reaches the ledger opens a new account. So it is
        retried only when the service certainly did not act (no connection was made, or
        a 503 ``not_ready``). After a ``kafka_unavailable`` 503 or a timeout the
        registration may have happened, with its key lost: the error is raised and
        calling again opens another account (the lost one stays empty). ``pending`` is
        True when the ledger had not confirmed by the deadline: the account is in the
        log and opens shortly.
        """
        headers = None if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        response = self._call(
            "POST",
            "/v1/clients",
            json={"name": name},
            headers=headers,
            idempotent=idempotency_key is not None,
        )
        return self._parse(response, RegisteredClient.from_json)

    def rotate_api_key(self, client_id: str, old_key_valid_for_s: int = 0) -> RotatedKey:
        """A new API key for the client. The old one keeps working for
        ``old_key_valid_for_s`` (up to a week), time for the client to deploy the new
        one; with 0, for a leaked key, it stops at once. Safe to retry: each call that
        reaches the ledger issues a key, the calls of one client are decided in order,
        the key returned is the last one decided, and a retry keeps the grace of the keys
        the first attempt replaced."""
        response = self._call(
            "POST",
            f"/v1/clients/{_segment(client_id)}/api-key",
            json={"old_key_valid_for_s": old_key_valid_for_s},
        )
        return self._parse(response, RotatedKey.from_json)

    def purchase(self, client_id: str, tokens: int, purchase_id: str) -> Credited:
        """Credits ``tokens``. ``purchase_id`` is billing's own id of the purchase: the
        same id is credited once however often it is sent (``repeat`` is then True),
        and with another amount it is a ``Conflict``."""
        response = self._call(
            "POST",
            f"/v1/clients/{_segment(client_id)}/purchases",
            json={"purchase_id": purchase_id, "tokens": tokens},
        )
        repeat = response.status_code == httpx.codes.OK
        return self._parse(response, lambda body: Credited.from_json(body, repeat=repeat))

    def subscribe(self, client_id: str, until: datetime | None = None) -> Subscription:
        """Memes AI on, open-ended or until ``until`` (time-zone aware, in the future)."""
        body = {"until": until.isoformat()} if until is not None else {}
        response = self._call("PUT", f"/v1/clients/{_segment(client_id)}/subscription", json=body)
        return self._parse(response, Subscription.from_json)

    def unsubscribe(self, client_id: str) -> Subscription:
        """Memes AI off."""
        response = self._call("DELETE", f"/v1/clients/{_segment(client_id)}/subscription")
        return self._parse(response, Subscription.from_json)
