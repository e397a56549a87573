"""The ``maas`` command: one entry point for every process of the service.

Each sub-command lives in the module that does the work; this file only parses, and
turns the errors a user can fix into one line each (``maas <command>: why``).
"""

from __future__ import annotations

import argparse
import sys

from confluent_kafka import KafkaError, KafkaException

from core.settings import SettingsError
from maas.processes import end_with_supervisor

# Commands that read or write Kafka and end: a Kafka error ends them with its line (the
# checkpointer's --loop catches its rounds' errors itself). The service's processes let
# it through, with the traceback their logs keep.
ONE_SHOT = frozenset({"topics", "replay", "audit", "export"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    from maas import (
        api_cli,
        audit_cli,
        blobs_cli,
        broker_cli,
        export_cli,
        replay_cli,
        service_cli,
    )

    broker_cli.register(sub)
    service_cli.register(sub)
    api_cli.register(sub)
    replay_cli.register(sub)
    audit_cli.register(sub)
    export_cli.register(sub)
    blobs_cli.register(sub)

    args = parser.parse_args(argv)
    end_with_supervisor()
    try:
        return int(args.func(args) or 0)
    except SettingsError as exc:
        print(f"maas {args.command}: {exc}", file=sys.stderr)
        return 2
    except KafkaException as exc:
        if args.command not in ONE_SHOT:
            raise
        print(f"maas {args.command}: {_kafka_problem(exc)}", file=sys.stderr)
        return 1


def _kafka_problem(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    text = error.str() if isinstance(error, KafkaError) else str(exc)
    return (
        f"Kafka: {text} (is a broker running at KAFKA_BOOTSTRAP_SERVERS, by default "
        "127.0.0.1:9092? `maas kafka status` checks the local one)"
    )


if __name__ == "__main__":
    sys.exit(main())
