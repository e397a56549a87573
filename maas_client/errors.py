"""Every failure the client raises, under one root.

::

    MaasError                  status (None: no answer), error code, detail, problem body
    ├── Unreachable            no answer: connection refused or reset, timed out
    ├── BadRequest             400 malformed_body, malformed_request, 405, 413, 415: not
    │                              readable as sent
    ├── Unauthorized           401 unauthorized: missing, malformed or unknown key or token
    ├── InsufficientTokens     402 insufficient_tokens: ``balance``
    ├── NotFound               404 not_found: unknown client, request id or route
    ├── Conflict               409 conflict: an id reused with other parameters
    │   └── AlreadyRegistered  409 already_registered: ``client_id`` opened under that key
    ├── RequestInProgress      409 request_in_progress: ``request_id``, ``retry_after_s``
    ├── InvalidRequest         422 invalid_request: ``fields`` names each invalid field
    ├── TooManyRequests        429 too_many_requests: this client's calls waiting on the
    │                              service's ledger are at their limit; ``retry_after_s``
    └── ServerError            500 and any other 5xx
        ├── GenerationFailed   502 generation_failed: ``request_id``; the token was refunded
        ├── Unavailable        503 kafka_unavailable, overloaded, not_ready,
        │                          image_store_unavailable: ``retry_after_s``, ``request_id``
        └── DeadlineExceeded   504 deadline_exceeded: ``request_id``

The service answers every error as an RFC 9457 problem (``application/problem+json``)
with a machine-readable ``error`` code; the class is chosen by that code, and by the
status when the body is not a problem (a proxy's 502, say). The problem body is kept
whole in ``problem``: typed properties read the fields each error documents.

``Unreachable``, ``RequestInProgress``, ``TooManyRequests``, ``Unavailable`` and
``DeadlineExceeded`` are the ones the clients retry by themselves; seeing one means the
retries ran out. ``idempotency_key`` is the key ``MemesClient.meme`` sent: repeat the
call with it later (within 7 days, how long the service remembers a request) and the
request is never charged twice.

A body that does not match the contract (a client older or newer than the service)
raises the root itself, with error ``unexpected_response``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

UNEXPECTED_RESPONSE = "unexpected_response"


class MaasError(Exception):
    """Root of the tree: the service refused the call, or did not answer."""

    def __init__(
        self,
        *,
        status: int | None,
        error: str,
        detail: str | None = None,
        problem: Mapping[str, Any] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.detail = detail
        self.problem: Mapping[str, Any] = problem or {}
        self.retry_after_s = retry_after_s  # from the Retry-After header, if any
        self.idempotency_key: str | None = None
        super().__init__(self._message())

    def _message(self) -> str:
        head = f"{self.status} {self.error}" if self.status is not None else self.error
        return f"{head}: {self.detail}" if self.detail else head

    def _str_field(self, name: str) -> str | None:
        value = self.problem.get(name)
        return value if isinstance(value, str) else None


class Unreachable(MaasError):
    """No HTTP answer. ``request_sent`` is False when no connection was made, so the
    service certainly never saw the request."""

    def __init__(self, detail: str, *, request_sent: bool) -> None:
        super().__init__(status=None, error="unreachable", detail=detail)
        self.request_sent = request_sent


class BadRequest(MaasError):
    """The service could not read the request as sent: a bug, or a client/service
    version mismatch."""


class Unauthorized(MaasError):
    pass


class InsufficientTokens(MaasError):
    @property
    def balance(self) -> int | None:
        value = self.problem.get("balance")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


class NotFound(MaasError):
    pass


class Conflict(MaasError):
    """The same ``Idempotency-Key`` or ``purchase_id`` was used before with other
    parameters: a different request, never retried."""


class AlreadyRegistered(Conflict):
    """``BillingClient.register`` with an ``idempotency_key`` that opened an account
    before (``client_id``). Its API key was shown once: ``rotate_api_key(client_id)``
    issues a new one."""

    @property
    def client_id(self) -> str | None:
        return self._str_field("client_id")


class RequestInProgress(MaasError):
    """A retry arrived while the first request was still being decided; try again
    after ``retry_after_s``."""

    @property
    def request_id(self) -> str | None:
        return self._str_field("request_id")


@dataclass(frozen=True)
class FieldError:
    field: str  # a query parameter, header or body field, as the request named it
    message: str


class InvalidRequest(MaasError):
    @property
    def fields(self) -> tuple[FieldError, ...]:
        listed = self.problem.get("fields")
        if not isinstance(listed, list):
            return ()
        return tuple(
            FieldError(str(item.get("field", "")), str(item.get("message", "")))
            for item in listed
            if isinstance(item, dict)
        )


class TooManyRequests(MaasError):
    """Refused before anything was recorded: this client already has as many calls
    waiting as the service takes from one client; try again after ``retry_after_s``."""


class ServerError(MaasError):
    pass


class GenerationFailed(ServerError):
    @property
    def request_id(self) -> str | None:
        return self._str_field("request_id")


class Unavailable(ServerError):
    """Not confirmed in the log (a meme request may still be recorded) or not ready."""

    @property
    def request_id(self) -> str | None:
        return self._str_field("request_id")


class DeadlineExceeded(ServerError):
    """No outcome by the deadline. For a meme, ``request_id`` can be looked up with
    ``MemesClient.request``; the token is refunded if no meme was made."""

    @property
    def request_id(self) -> str | None:
        return self._str_field("request_id")


_BY_CODE: dict[str, type[MaasError]] = {
    "malformed_body": BadRequest,
    "malformed_request": BadRequest,
    "method_not_allowed": BadRequest,
    "body_too_large": BadRequest,
    "unsupported_media_type": BadRequest,
    "unauthorized": Unauthorized,
    "insufficient_tokens": InsufficientTokens,
    "not_found": NotFound,
    "conflict": Conflict,
    "already_registered": AlreadyRegistered,
    "request_in_progress": RequestInProgress,
    "invalid_request": InvalidRequest,
    "too_many_requests": TooManyRequests,
    "generation_failed": GenerationFailed,
    "kafka_unavailable": Unavailable,
    "overloaded": Unavailable,
    "not_ready": Unavailable,
    "image_store_unavailable": Unavailable,
    "deadline_exceeded": DeadlineExceeded,
}

_BY_STATUS: dict[int, type[MaasError]] = {
    400: BadRequest,
    401: Unauthorized,
    402: InsufficientTokens,
    404: NotFound,
    405: BadRequest,
    409: Conflict,
    413: BadRequest,
    415: BadRequest,
    422: InvalidRequest,
    429: TooManyRequests,
    503: Unavailable,
    504: DeadlineExceeded,
}


def error_for(
    status: int, problem: Mapping[str, Any], retry_after_s: float | None = None
) -> MaasError:
    """The typed error for an answer's status and (possibly empty) problem body."""
    code = problem.get("error")
    if not isinstance(code, str) or not code:
        # Not one of the service's problems: name it as the service names the
        # framework's own errors, by the status.
        code = _status_name(status)
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else MaasError
    detail = problem.get("detail")
    return cls(
        status=status,
        error=code,
        detail=detail if isinstance(detail, str) else None,
        problem=problem,
        retry_after_s=retry_after_s,
    )


def _status_name(status: int) -> str:
    try:
        return HTTPStatus(status).name.lower()
    except ValueError:
        return f"http_{status}"
