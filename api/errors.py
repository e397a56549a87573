"""Every error the API answers with, under one root, and the one handler that maps them.

::

    ApiError                      (root: status + machine-readable ``error`` code)
    ├── Unauthorized              401  missing / malformed / unknown key, wrong billing token
    ├── NotFound                  404  unknown client, request or image
    ├── Conflict                  409  same id, different body (idempotency, purchase)
    ├── InsufficientTokens        402  the ledger rejected the request: balance too low
    ├── InvalidParameter          422  a value the ledger's contract refuses (one field)
    ├── GenerationFailed          502  the generator failed; the token was refunded
    ├── DeadlineExceeded          504  no outcome by the deadline (maybe refunded, maybe later)
    ├── KafkaUnavailable          503  the event could not be appended; keeps the Kafka code
    └── NotReady                  503  the API's own consumers have not caught up yet

Rejections are data in the ledger (``MemeRejected`` with a numbered reason); they only
become exceptions here, at the HTTP edge, so that routes stay straight-line code.

Request validation (FastAPI's ``RequestValidationError``) has its own handler that
renders every violation as ``{"error": "invalid_request", "fields": [...]}`` naming the
query parameter, header, path parameter or body field at fault.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


class ApiError(Exception):
    """Root of the tree: an answer the API gives on purpose, never a crash."""

    status_code: ClassVar[int] = 500
    error: ClassVar[str] = "internal_error"

    def __init__(self, detail: str | None = None, **fields: Any) -> None:
        super().__init__(detail or self.error)
        self.detail = detail
        self.fields = fields

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, **self.fields}
        if self.detail:
            body["detail"] = self.detail
        return body

    def headers(self) -> dict[str, str]:
        return {}


class Unauthorized(ApiError):
    status_code = 401
    error = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class NotFound(ApiError):
    status_code = 404
    error = "not_found"


class Conflict(ApiError):
    status_code = 409
    error = "conflict"


class InsufficientTokens(ApiError):
    status_code = 402
    error = "insufficient_tokens"


class InvalidParameter(ApiError):
    """One field refused after FastAPI's own validation (e.g. a computed value)."""

    status_code = 422
    error = "invalid_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(None, fields=[{"field": field, "message": message}])


class GenerationFailed(ApiError):
    status_code = 502
    error = "generation_failed"


class DeadlineExceeded(ApiError):
    status_code = 504
    error = "deadline_exceeded"


class KafkaUnavailable(ApiError):
    """The append did not complete; ``kafka_code`` is librdkafka's error name if known."""

    status_code = 503
    error = "kafka_unavailable"

    def __init__(self, detail: str | None = None, kafka_code: str | None = None) -> None:
        super().__init__(detail)
        self.kafka_code = kafka_code
        if kafka_code:
            self.fields["kafka_code"] = kafka_code

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class NotReady(ApiError):
    status_code = 503
    error = "not_ready"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


async def handle_api_error(_: Request, exc: Exception) -> JSONResponse:
    """The single mapping from domain errors to HTTP answers."""
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers())


# Headers arrive lower-cased in FastAPI's error locations; answer with the name a
# client wrote in its request.
_HEADER_NAMES = {"idempotency-key": "Idempotency-Key", "authorization": "Authorization"}


def field_name(loc: tuple[int | str, ...]) -> str:
    """``("query", "lat")`` -> ``lat``; ``("body", "tokens")`` -> ``tokens``."""
    if not loc:
        return "request"
    source, *path = loc
    if source == "header" and path:
        return _HEADER_NAMES.get(str(path[0]).lower(), str(path[0]))
    if source == "body" and not path:
        return "body"
    if source not in ("query", "path", "body", "header", "cookie"):
        path = list(loc)
    return ".".join(str(part) for part in path) or str(source)


async def handle_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = []
    for error in exc.errors():
        name = field_name(tuple(error.get("loc", ())))
        if error.get("type") == "missing":
            message = "required"
        else:
            message = str(error.get("msg", "invalid value"))
        fields.append({"field": name, "message": message})
    return JSONResponse({"error": "invalid_request", "fields": fields}, status_code=422)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, handle_api_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
