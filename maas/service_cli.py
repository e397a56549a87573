"""Sub-commands that run one process of the service each, and ``maas up`` for all of them."""

from __future__ import annotations

import argparse
import sys

from core import logs
from core.settings import Settings
from maas.arguments import positive, tcp_port
from maas.processes import DEFAULT_COUNTS


def register(sub: argparse._SubParsersAction) -> None:
    topics = sub.add_parser("topics", help="create the region's topics")
    topics.add_argument("action", choices=["create"])
    topics.set_defaults(func=_topics)

    processor = sub.add_parser("processor", help="run a ledger processor instance")
    processor.add_argument("--instance-id", help="stable id of this instance (default: 0)")
    processor.set_defaults(func=_processor)

    generator = sub.add_parser("generator", help="run a generator pool")
    generator.add_argument("--kind", choices=["standard", "ai"], required=True)
    generator.add_argument(
        "--instance-id",
        help="stable id of this pool among those of its kind (its static group membership; "
        "default: 0)",
    )
    generator.set_defaults(func=_generator)

    usage = sub.add_parser("usage", help="run the usage analytics worker (faust)")
    usage.add_argument("--host", default="127.0.0.1", help="bind address of its web views")
    usage.set_defaults(func=_usage)

    up = sub.add_parser("up", help="run everything locally: Kafka, processors, API")
    up.add_argument("--port", type=tcp_port, default=8000, help="API port (default 8000)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument(
        "--kafka-port",
        type=tcp_port,
        default=9092,
        help="the local broker's port (default 9092); none starts when "
        "KAFKA_BOOTSTRAP_SERVERS names a cluster",
    )
    for flag, kind, what in (
        (
            "--processors",
            "processor",
            "ledger processor instances (default %(default)s: one keeps deciding while "
            "another restarts)",
        ),
        (
            "--generators-standard",
            "generator-standard",
            "standard generator pool processes (default %(default)s)",
        ),
        ("--generators-ai", "generator-ai", "AI generator pool processes (default %(default)s)"),
        (
            "--api",
            "api",
            "API processes, all on --port (default %(default)s; at most MAAS_REPLY_PARTITIONS)",
        ),
    ):
        up.add_argument(
            flag,
            type=positive,
            metavar="N",
            default=DEFAULT_COUNTS[kind],
            help=what,
        )
    up.set_defaults(func=_up)

    what = (
        "replace every process of the running maas up in turn, without downtime (a "
        "deploy: each runs the code now on disk); prints each as it serves again"
    )
    restart = sub.add_parser("restart", help=what, description=what)
    restart.add_argument(
        "--timeout",
        type=positive,
        default=600,
        metavar="S",
        help="give up waiting for the outcome after S seconds (default %(default)s)",
    )
    restart.set_defaults(func=_restart)


def _topics(args: argparse.Namespace) -> int:
    from core.admin import ensure_topics

    logs.configure("topics")
    ensure_topics(Settings.from_env())
    return 0


def _processor(args: argparse.Namespace) -> int:
    from processors.ledger.processor import run

    settings = _instance_settings(args)
    logs.configure(f"ledger-{settings.instance_id}")
    run(settings)
    return 0


def _generator(args: argparse.Namespace) -> int:
    from processors.generators.worker import run

    settings = _instance_settings(args)
    logs.configure(f"generator-{args.kind}-{settings.instance_id}")
    run(settings, args.kind)
    return 0


def _instance_settings(args: argparse.Namespace) -> Settings:
    """The settings, with ``--instance-id`` (if given) as the instance id."""
    overrides = {"instance_id": args.instance_id} if args.instance_id else {}
    return Settings.from_env(**overrides)


def _usage(args: argparse.Namespace) -> int:
    from processors.usage.app import run

    logs.configure("usage")
    run(Settings.from_env(), args.host)
    return 0


def _up(args: argparse.Namespace) -> int:
    from maas.api_cli import check_port_free
    from maas.supervisor import check_api_count, up

    settings = Settings.from_env()
    counts = {
        "processor": args.processors,
        "generator-standard": args.generators_standard,
        "generator-ai": args.generators_ai,
        "api": args.api,
    }
    try:
        # Each of these would otherwise fail a child over and over, after the start.
        settings.require_secrets("billing_token", "auditor_token", "audit_signing_key")
        check_api_count(args.api, settings)
        check_port_free(args.host, args.port)
    except ValueError as exc:
        print(f"maas up: {exc}", file=sys.stderr)
        return 2
    logs.configure("up")
    return up(settings, host=args.host, port=args.port, counts=counts, kafka_port=args.kafka_port)


def _restart(args: argparse.Namespace) -> int:
    from pathlib import Path

    from maas.rolling import request

    data_dir = Path(Settings.from_env().data_dir)
    try:
        status = request(data_dir, args.timeout, lambda label: print(f"restarted {label}"))
    except RuntimeError as exc:
        print(f"maas restart: {exc}", file=sys.stderr)
        return 1
    restarted = ", ".join(status.restarted) or "none"
    if status.state == "halted":
        print(f"maas restart: halted: {status.error}; restarted: {restarted}", file=sys.stderr)
        return 1
    print(f"maas restart: done; restarted in turn: {restarted}")
    return 0
