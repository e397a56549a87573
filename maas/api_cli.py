"""``maas api``: run the HTTP API of one region (one instance per process).

Several API processes serve one port: each binds its own listening socket with
``SO_REUSEPORT``, and the kernel spreads new connections across them. Each reads its
replies from its own partition (``MAAS_API_INSTANCE``), so instances share no state.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import signal
import socket
from types import FrameType

from maas.arguments import tcp_port

log = logging.getLogger("maas.api")

DRAIN_POLL_S = 0.05


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("api", help="run the HTTP API")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=tcp_port, default=8000, help="port (default 8000)")
    parser.set_defaults(func=_run)


def shared_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` that other API processes may bind too.

    Binding fails (``EADDRINUSE``) while a process that did not set ``SO_REUSEPORT``
    holds the port. The socket is not listening yet: uvicorn listens once the app has
    started, so the kernel hands no connection to a process still starting."""
    return _bind(host, port, reuse_port=True)


def check_port_free(host: str, port: int) -> None:
    """Refuse (ValueError) a port that any process listens on, even one that shares it
    with ``SO_REUSEPORT``: a stale API of an earlier run would otherwise take its share of
    the connections without a word."""
    try:
        _bind(host, port, reuse_port=False).close()
    except OSError as exc:
        raise ValueError(
            f"--port {port}: {host}:{port} is taken ({exc.strerror}); is another "
            "`maas up` or `maas api` still running?"
        ) from exc


def _bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        # A restart binds at once, whatever connections of the last run are in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; return the limit.

    Every client connection is an open file, and an idle one is kept for
    ``api_keep_alive_s``: at the soft limit many systems start services with (1024),
    a crowd of idle clients would have new connections refused while the CPU is idle."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.errors import ProblemHttpProtocol
    from core import logs
    from core.heartbeat import dump_stacks_on_signal
    from core.readiness import mark_ready
    from core.settings import Settings

    settings = Settings.from_env()
    logs.configure(f"api-{settings.api_instance}")
    app = create_app(settings)  # refuses bad settings before the port is taken
    dump_stacks_on_signal()  # what a supervisor asks for before it kills a silent API
    try:
        sock = shared_socket(args.host, args.port)
    except OSError as exc:
        log.error(
            "api cannot bind host=%s port=%d error=%r: another process holds the port "
            "(API processes share a port only with each other, through SO_REUSEPORT)",
            args.host,
            args.port,
            exc.strerror,
        )
        return 1
    log.info(
        "api bound host=%s port=%d instance=%d open_files_limit=%d",
        args.host,
        args.port,
        settings.api_instance,
        raise_open_files_limit(),
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            # Listening, with its keys loaded and its replies positioned: it serves.
            if self.started and app.state.started_ready:
                mark_ready(settings.ready_file)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await self.drain(sockets)
            await super().shutdown(sockets)  # closes what is left, waits for the calls

        async def drain(self, sockets: list[socket.socket] | None) -> None:
            """Stop listening, then let the clients leave between calls (api/draining.py):
            until no connection is open, ``api_drain_s`` has passed or a second Ctrl-C."""
            for server in self.servers:
                server.close()
            for sock in sockets or []:
                sock.close()
            app.state.draining = True
            connections = self.server_state.connections
            log.info(
                "api draining connections=%d for_up_to_s=%s", len(connections), settings.api_drain_s
            )
            loop = asyncio.get_running_loop()
            give_up = loop.time() + settings.api_drain_s
            while connections and not self.force_exit and loop.time() < give_up:
                await asyncio.sleep(DRAIN_POLL_S)
            log.info("api drained connections_left=%d", len(connections))

    # Our own key=value logging config, and no access log: /metrics counts requests.
    config = uvicorn.Config(
        app,
        http=ProblemHttpProtocol,
        log_config=None,
        access_log=False,
        timeout_keep_alive=settings.api_keep_alive_s,
    )
    # uvicorn stops gracefully on SIGTERM, then raises it again for the handler it found,
    # whose default ends the process as killed by SIGTERM (-15 to its supervisor) after a
    # clean stop. This one exits 0 instead, as the service's other processes do.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    with sock:
        Server(config).run(sockets=[sock])
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
