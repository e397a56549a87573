"""Every error the API answers with, under one root, and the one handler that maps them.

::

    ApiError                      (root: status + machine-readable ``error`` code)
    ├── Unauthorized              401  missing / malformed / unknown key, wrong billing token
    ├── NotFound                  404  unknown client, request or image
    ├── Conflict                  409  same id, different body (idempotency, purchase)
    │   ├── AlreadyRegistered     409  a registration repeated under its Idempotency-Key
    │   └── RequestInProgress     409  a retry of a request still in progress; Retry-After
    ├── InsufficientTokens        402  the ledger rejected the request: balance too low
    ├── InvalidParameter          422  a value the ledger's contract refuses (one field)
    ├── GenerationFailed          502  the generator failed; the token was refunded
    ├── DeadlineExceeded          504  no outcome by the deadline (maybe refunded, maybe later)
    ├── KafkaUnavailable          503  the event could not be appended; keeps the Kafka code
    ├── Overloaded                503  too many calls waiting on the ledger; nothing appended
    │   └── TooManyRequests       429  too many of this client's calls waiting; nothing appended
    └── NotReady                  503  the API's own consumers have not caught up yet

Rejections are data in the ledger (``MemeRejected`` with a numbered reason); they only
become exceptions here, at the HTTP edge, so that routes stay straight-line code.

Every error, ours or the framework's, has one shape: an RFC 9457 problem
(``application/problem+json``) with ``type``, ``title``, ``status``, the machine-readable
``error`` code, an optional ``detail`` and the error's own fields (``request_id``,
``balance``, ``fields``...); the ``Problem`` model documents it in OpenAPI. The edge cases
have their handlers here too:

- request validation (``RequestValidationError``): 422 ``invalid_request`` with
  ``fields``, each naming the query parameter, header, path parameter or body field;
- the framework's HTTP errors: an unknown route 404 ``not_found``, a wrong method 405
  ``method_not_allowed`` (with ``Allow``), a body that cannot be parsed 400
  ``malformed_body``;
- ``BodyGuard`` (middleware): a body over ``MAX_BODY_BYTES`` 413 ``body_too_large``, a
  body that is not JSON 415 ``unsupported_media_type``, an object that repeats a key 400
  ``malformed_body``;
- anything unexpected: 500 ``internal_error``, logged with its traceback, never a stack
  trace to the client;
- a request that is not HTTP/1.1 at all (a raw byte outside ASCII in the URL, say),
  which never reaches the app: ``ProblemHttpProtocol`` answers it 400
  ``malformed_request`` instead of the server's plain-text line.
"""

from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
MAX_BODY_BYTES = 64 * 1024  # the largest body a route takes is a few hundred bytes


class Problem(BaseModel):
    """The body of every error answer (RFC 9457), with the error's own fields."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(default="about:blank", description="Always about:blank: see `error`")
    title: str = Field(description="The HTTP status phrase")
    status: int
    error: str = Field(description="Machine-readable code, e.g. `insufficient_tokens`")
    detail: str | None = Field(default=None, description="What went wrong, for people")


def problem(
    status: int,
    error: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> JSONResponse:
    body = problem_body(status, error, detail, **fields)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def problem_body(
    status: int, error: str, detail: str | None = None, **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "error": error,
        **fields,
    }
    if detail:
        body["detail"] = detail
    return body


class ApiError(Exception):
    """Root of the tree: an answer the API gives on purpose, never a crash."""

    status_code: ClassVar[int] = 500
    error: ClassVar[str] = "internal_error"

    def __init__(self, detail: str | None = None, **fields: Any) -> None:
        super().__init__(detail or self.error)
        self.detail = detail
        self.fields = fields

    def response(self) -> JSONResponse:
        return problem(self.status_code, self.error, self.detail, self.headers(), **self.fields)

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


class AlreadyRegistered(Conflict):
    """A registration repeated under its Idempotency-Key: the account is there, and its
    key, shown once, cannot be shown again."""

    error = "already_registered"

    def __init__(self, client_id: str) -> None:
        super().__init__(
            "an account was registered under this Idempotency-Key; its API key was shown "
            f"once: POST /v1/clients/{client_id}/api-key issues a new one",
            client_id=client_id,
        )


class RequestInProgress(Conflict):
    """A retry of a request the ledger is still deciding, beyond the retries it waits on."""

    error = "request_in_progress"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


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


class ImageStoreUnavailable(ApiError):
    """The image store did not answer (S3 unreachable, a disk's I/O error): nothing is
    lost, the image may be there; try again."""

    status_code = 503
    error = "image_store_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class Overloaded(ApiError):
    """Refused before anything was appended: the request was not recorded or charged."""

    status_code = 503
    error = "overloaded"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class TooManyRequests(Overloaded):
    """The same refusal, for a client that holds its own share of the waiting calls: the
    excess is this client's, not the service's."""

    status_code = 429
    error = "too_many_requests"


class NotReady(ApiError):
    status_code = 503
    error = "not_ready"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


# Where ``api.deps.current_client`` leaves the ``Sunset`` of a replaced key still in its
# grace: a refused call's answer says when the key stops working as an accepted one's does.
SUNSET_STATE = "sunset"


def _with_sunset(request: Request, response: JSONResponse) -> JSONResponse:
    sunset = getattr(request.state, SUNSET_STATE, None)
    if sunset is not None:
        response.headers["Sunset"] = sunset
    return response


async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
    """The single mapping from domain errors to HTTP answers."""
    assert isinstance(exc, ApiError)
    return _with_sunset(request, exc.response())


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


async def handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _with_sunset(request, _validation_problem(exc))


def _validation_problem(exc: RequestValidationError) -> JSONResponse:
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            # A syntax error, not a field's value: the body as a whole is refused.
            position = error.get("loc", ("body", "?"))[-1]
            reason = error.get("ctx", {}).get("error", "invalid JSON")
            return problem(
                400, "malformed_body", f"the body is not valid JSON: {reason} at {position}"
            )
    fields = []
    for error in exc.errors():
        name = field_name(tuple(error.get("loc", ())))
        if error.get("type") == "missing":
            message = "required"
        else:
            # A validator's own words, without pydantic's "Value error, " before them.
            message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        fields.append({"field": name, "message": message})
    return problem(422, "invalid_request", fields=fields)


_HTTP_ERRORS = {
    400: "malformed_body",
    404: "not_found",
    405: "method_not_allowed",
}


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    """The framework's own answers (no route, wrong method, unparsable body)."""
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
        # The router names the methods of the first route that matched the path only;
        # a path served by several routes (PUT and DELETE) allows them all.
        headers["Allow"] = ", ".join(_methods_of(request))
    error = _HTTP_ERRORS.get(exc.status_code, HTTPStatus(exc.status_code).name.lower())
    return _with_sunset(request, problem(exc.status_code, error, detail, headers))


def _methods_of(request: Request) -> list[str]:
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods.update(method.upper() for method in operations)
    return sorted(methods)


async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error method=%s path=%s", request.method, request.url.path)
    return problem(500, "internal_error", "an unexpected error; it has been logged")


class BodyGuard:
    """Refuses what no route takes: a body over ``MAX_BODY_BYTES`` (413, whether announced
    or streamed), one that is not JSON (415), and a JSON object that repeats a key (400):
    parsers keep one of the values and drop the rest without a word, and billing's
    ``{"tokens": 1, "tokens": 1000}`` meant one of them. Bodies are counted as they
    arrive, so a missing ``Content-Length`` does not get past it, and kept (at most
    ``MAX_BODY_BYTES``) to be handed on to the route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            await _too_large()(scope, receive, send)
            return
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if length != b"0" and media_type and not _is_json(media_type):
            response = problem(
                415,
                "unsupported_media_type",
                f"the body must be application/json, not {media_type.decode(errors='replace')}",
            )
            await response(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                await _too_large()(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        if repeated := _repeated_key(body):
            response = problem(400, "malformed_body", f"the body repeats the key {repeated!r}")
            await response(scope, receive, send)
            return
        handed_on = False

        async def replay() -> Message:
            nonlocal handed_on
            if handed_on:
                return await receive()
            handed_on = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _too_large() -> JSONResponse:
    return problem(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")


def _repeated_key(body: bytes) -> str | None:
    """The first key some object of this JSON repeats; None if none does, or if it is
    not JSON (the route then says what is wrong with it)."""
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        found = dict(items)
        if len(found) < len(items):
            seen: set[str] = set()
            for key, _ in items:
                if key in seen:
                    repeated.append(key)
                seen.add(key)
        return found

    try:
        json.loads(body, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return None
    return repeated[0] if repeated else None


def _is_json(media_type: bytes) -> bool:
    return media_type == b"application/json" or media_type.endswith(b"+json")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, handle_api_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(HTTPException, handle_http_error)
    app.add_exception_handler(Exception, handle_unexpected)
    app.add_middleware(BodyGuard)


_MALFORMED_REQUEST = json.dumps(
    problem_body(
        400,
        "malformed_request",
        "not a valid HTTP/1.1 request; a byte outside ASCII in the URL must be "
        "percent-encoded (%C3%A9 for \u00e9)",
    ),
    separators=(",", ":"),
).encode()


class ProblemHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools), whose answer to a request it cannot parse
    is the service's problem shape, not ``text/plain`` "Invalid HTTP request received."."""

    def send_400_response(self, msg: str) -> None:
        head = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: " + PROBLEM_MEDIA_TYPE.encode() + b"\r\n",
            b"content-length: " + str(len(_MALFORMED_REQUEST)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + _MALFORMED_REQUEST)
        self.transport.close()
