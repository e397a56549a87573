"""Annotated dependencies: what a route may ask for by naming its type.

``ClientId`` authenticates an API key; ``BillingScope`` and ``AuditorScope`` authenticate
the billing team's and the auditors' tokens; ``IdPath`` is a path parameter that is an
event ``Id``; ``Bridge``, ``Keys``, ``Blobs``, ``Settled``, ``AiGate`` and ``AppSettings``
hand out the objects built at start-up. Routes never read ``request.app.state`` themselves.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Request, Response, params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from api.ai_admission import AiAdmission
from api.bridge import KafkaBridge
from api.errors import SUNSET_STATE, NotReady, Unauthorized
from api.keys import KeyTable
from api.settled import SettledRequests
from core.blobstore import BlobStore
from core.settings import Settings
from schemas.events import ID_MAX_CHARS, ID_PATTERN

API_KEY_PREFIX = "mk_"
MAX_API_KEY_CHARS = 128

# auto_error=False: a missing or odd header must reach our handler (401 with our body),
# not FastAPI's default 403.
_client_bearer = HTTPBearer(
    scheme_name="ApiKey",
    description="The client's API key, `mk_...`, as a bearer token.",
    auto_error=False,
)
_billing_bearer = HTTPBearer(
    scheme_name="BillingToken",
    description="The billing team's token (`MAAS_BILLING_TOKEN`).",
    auto_error=False,
)
_auditor_bearer = HTTPBearer(
    scheme_name="AuditorToken",
    description="The auditors' token (`MAAS_AUDITOR_TOKEN`), read-only.",
    auto_error=False,
)


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_bridge(request: Request) -> KafkaBridge:
    return request.app.state.bridge


async def get_keys(request: Request) -> KeyTable:
    return request.app.state.keys


async def get_blobs(request: Request) -> BlobStore:
    return request.app.state.blobs


async def get_settled(request: Request) -> SettledRequests:
    return request.app.state.settled


async def get_ai_admission(request: Request) -> AiAdmission:
    return request.app.state.ai_admission


AppSettings = Annotated[Settings, Depends(get_settings)]
Blobs = Annotated[BlobStore, Depends(get_blobs)]
Bridge = Annotated[KafkaBridge, Depends(get_bridge)]
Keys = Annotated[KeyTable, Depends(get_keys)]
Settled = Annotated[SettledRequests, Depends(get_settled)]
AiGate = Annotated[AiAdmission, Depends(get_ai_admission)]


def _bearer_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    if len(request.headers.getlist("authorization")) > 1:
        raise Unauthorized("more than one Authorization header")
    if credentials is None or not credentials.credentials:
        if "authorization" not in request.headers:
            raise Unauthorized("missing Authorization header")
        raise Unauthorized("malformed Authorization header: expected 'Bearer <token>'")
    return credentials.credentials


async def current_client(
    request: Request,
    response: Response,
    keys: Keys,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_client_bearer)],
) -> str:
    """The client id of the request's API key. A replaced key still in its grace gets
    its answers, refusals included, with a ``Sunset`` header (RFC 8594): when it stops
    working, so that the client's own logs say it is time to deploy the new key."""
    api_key = _bearer_token(request, credentials)
    if not api_key.startswith(API_KEY_PREFIX) or len(api_key) > MAX_API_KEY_CHARS:
        raise Unauthorized("malformed API key")
    client_id = await keys.client_for_waiting(api_key)
    if client_id is None:
        if not keys.loaded:
            raise NotReady("the API key table is still loading")
        raise Unauthorized("unknown API key")
    ends_ms = keys.grace_ends_ms(api_key)
    if ends_ms is not None:
        sunset = format_datetime(datetime.fromtimestamp(ends_ms / 1000, UTC), usegmt=True)
        response.headers["Sunset"] = sunset
        setattr(request.state, SUNSET_STATE, sunset)  # for an error's answer (api.errors)
    return client_id


async def billing_scope(
    request: Request,
    settings: AppSettings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_billing_bearer)],
) -> None:
    _check_secret(_bearer_token(request, credentials), settings.billing_token, "billing")


async def auditor_scope(
    request: Request,
    settings: AppSettings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_auditor_bearer)],
) -> None:
    _check_secret(_bearer_token(request, credentials), settings.auditor_token, "auditor")


def _check_secret(token: str, expected: SecretStr, scope: str) -> None:
    # Constant time: the token is a shared secret compared in full.
    if not secrets.compare_digest(token.encode(), expected.get_secret_value().encode()):
        raise Unauthorized(f"wrong {scope} token")


ClientId = Annotated[str, Depends(current_client)]
BillingScope = Depends(billing_scope)
AuditorScope = Depends(auditor_scope)
# The same rules as the events' Id, so a bad id is refused here as the event would refuse it.
IdPath = Annotated[str, Path(min_length=1, max_length=ID_MAX_CHARS, pattern=ID_PATTERN)]


def idempotency_key(description: str) -> Any:
    """The ``Idempotency-Key`` header, with what it means on a route: an id as events'."""
    return Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=ID_MAX_CHARS,
        pattern=ID_PATTERN,
        description=description,
    )


IdempotencyKey = Annotated[
    str | None,
    idempotency_key(
        "Retry safely: the same key with the same parameters returns the first result and "
        "charges once; with other parameters it is a 409. A request is remembered "
        "MAAS_PERSONAL_DATA_RETENTION_MS (7 days) after its deadline; after that the same "
        "key is a new request."
    ),
]


def given_once(*query: str, headers: tuple[str, ...] = ()) -> params.Depends:
    """A dependency refusing (422, naming each) these query parameters and headers when
    a request repeats one: the framework would take one of the values and drop the
    rest without a word, and on a paid call the client meant one of them."""

    async def check(request: Request) -> None:
        repeated = [
            ("query", name) for name in query if len(request.query_params.getlist(name)) > 1
        ]
        repeated += [("header", name) for name in headers if len(request.headers.getlist(name)) > 1]
        if repeated:
            raise RequestValidationError(
                [
                    {"loc": loc, "msg": "given more than once", "type": "value_error"}
                    for loc in repeated
                ]
            )

    return Depends(check)


async def known_parameters_only(request: Request) -> None:
    """Every route's: refuses (422, naming each) a query parameter the route does not
    take, as a body field that does not exist is refused. Ignored, ``&kind=ai`` on
    ``/memes`` or ``&form=csv`` on a ledger read would be answered as if not asked."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    takes = _TAKES.get(route.unique_id)
    if takes is None:
        takes = _TAKES[route.unique_id] = _query_parameters(route)
    unknown = [name for name in request.query_params if name not in takes]
    if unknown:
        known = ", ".join(sorted(takes)) or "none"
        raise RequestValidationError(
            [
                {
                    # "?=5" has a name of "": shown so, not as the field "query".
                    "loc": ("query", name or "(unnamed)"),
                    "msg": f"not a parameter of this route (it takes: {known})",
                    "type": "value_error",
                }
                for name in unknown
            ]
        )


# Per route (``unique_id``: its name, path and method), built on its first request.
_TAKES: dict[str, frozenset[str]] = {}


def _query_parameters(route: APIRoute) -> frozenset[str]:
    """What the route and its dependencies declare (``Query`` aliases)."""
    names: set[str] = set()
    dependants = [route.dependant]
    while dependants:
        dependant = dependants.pop()
        names.update(param.alias for param in dependant.query_params)
        dependants.extend(dependant.dependencies)
    return frozenset(names)
