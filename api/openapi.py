"""The OpenAPI document, with every error a route can answer described as a ``Problem``.

Routes declare the statuses that are theirs (402, 404, 409, 502; ``CALLS_LEDGER`` for
429, 503 and 504 where a route appends to the log and waits for the ledger) with a
description. What follows from a route's shape is added here, once, so that no route
can forget it:

- a security scheme -> 401 (and, for client keys, 503 while the key table loads);
- parameters or a body -> 422 naming the field; a body -> 400, 413 and 415;
- every error status -> the ``Problem`` schema as ``application/problem+json``, in place
  of FastAPI's default validation error schema.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.errors import PROBLEM_MEDIA_TYPE, Problem

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

CALLS_LEDGER: dict[int | str, dict[str, Any]] = {
    429: {"description": "Too many of this client's calls waiting; retry after Retry-After"},
    503: {"description": "Not recorded, overloaded or not ready; retry after Retry-After"},
    504: {"description": "No answer from the ledger by the deadline; repeating the call is safe"},
}

_IMPLIED = {
    401: "Missing, malformed or wrong credentials",
    400: "The body is not valid JSON",
    413: "The body is too large",
    415: "The body is not application/json",
    422: "A parameter or body field is invalid; `fields` names each one",
    503: "Not ready; retry after Retry-After",
}


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for operations in document["paths"].values():
        for operation in operations.values():
            _describe_errors(operation)
    return document


def _describe_errors(operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    implied: set[int] = set()
    if operation.get("security"):
        implied.add(401)
        if any("ApiKey" in requirement for requirement in operation["security"]):
            implied.add(503)  # the key table is still loading
    if operation.get("parameters") or operation.get("requestBody"):
        implied.add(422)
    if operation.get("requestBody"):
        implied |= {400, 413, 415}
    for status in implied:
        responses.setdefault(str(status), {"description": _IMPLIED[status]})
    for code, response in responses.items():
        if code.isdigit() and int(code) >= 400:
            response.setdefault("description", HTTPStatus(int(code)).phrase)
            response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}}
