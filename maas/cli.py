"""The ``maas`` command: one entry point for every process of the service.

Each sub-command lives in the module that does the work; this file only parses.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    from maas import api_cli, audit_cli, broker_cli, export_cli, replay_cli, service_cli

    broker_cli.register(sub)
    service_cli.register(sub)
    api_cli.register(sub)
    replay_cli.register(sub)
    audit_cli.register(sub)
    export_cli.register(sub)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
