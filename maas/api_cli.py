"""``maas api``: run the HTTP API of one region (one instance per process)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("api", help="run the HTTP API")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from core import logs
    from core.settings import Settings

    settings = Settings.from_env()
    logs.configure(f"api-{settings.api_instance}")
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        # Our own key=value logging config, and no access log: /metrics counts requests.
        log_config=None,
        access_log=False,
    )
    return 0
