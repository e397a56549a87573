"""Refusing the excess of meme requests before the framework spends anything on them.

Under overload most requests are refused (503 ``overloaded``, ``KafkaBridge.full``). Found
by the route, a refusal cost as much CPU as an admitted request up to its append: the
framework's routing, six dependencies, the API key lookup, the query's screening and the
event's validation. On a machine the overload keeps busy, that CPU is taken from the
requests being served, and every refusal waits its turn for it
(``docs/capacity.md``, Overload).

``MemeShedding`` answers ``GET /memes`` with that same 503 at the edge, before anything
is parsed, while the bridge is full. Requests with an ``Idempotency-Key`` go on to the
route: a retry this process already answered is served from its settled answers, not
refused (the route then refuses the others, the same way). A shed request is neither
authenticated nor validated: the 503 says only "retry later", and the retry gets the
401 or 422 it deserves.
"""

from __future__ import annotations

from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from api.bridge import KafkaBridge

IDEMPOTENCY_HEADER = b"idempotency-key"


class MemeShedding:
    """Pure ASGI, in front of ``route`` (``GET /memes``): a request it lets through costs
    it a comparison or two."""

    def __init__(self, app: ASGIApp, route: APIRoute) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.route
        if scope["type"] == "http" and scope["path"] == route.path and scope["method"] == "GET":
            bridge: KafkaBridge | None = getattr(scope["app"].state, "bridge", None)
            if bridge is not None and bridge.full and not _keyed(scope):
                scope["route"] = route  # the HTTP metrics count it under its route
                await bridge.refuse().response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _keyed(scope: Scope) -> bool:
    return any(name == IDEMPOTENCY_HEADER for name, _ in scope["headers"])
