"""Handing a stopping API process's clients to the other API processes, call by call.

A stopping API process (a rolling restart's predecessor, ``maas up`` stopping) first
stops listening, so new connections go to the processes still listening on the port.
Its open connections are not closed at once: a client may be sending its next call on an
idle one at that very moment, and that call is lost without an answer (the client sees
"server disconnected"; nothing was read, so nothing was charged, but the client cannot
know that). Instead, while it drains (``maas.api_cli``, up to ``api_drain_s``), every
answer it gives says ``Connection: close``: the client reads its answer, closes, and
sends its next call on a new connection, to another process.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CLOSE = (b"connection", b"close")


class Draining:
    """Pure ASGI: once ``app.state.draining`` is set, every call's response closes its
    connection. Checked when a call starts, so that a serving process pays one attribute
    read per call: a call under way when the drain begins keeps its connection, and the
    next call on it closes it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["app"].state.draining:
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), CLOSE]}
            await send(message)

        await self.app(scope, receive, send_closing)
