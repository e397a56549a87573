"""The check of a run: a history file against a region's topics, and its command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from tests.jepsen.checker.kafka import read_records
from tests.jepsen.checker.model import Verdict
from tests.jepsen.checker.verdict import check_records
from tests.jepsen.history import read_history

# The package docstring's first line.
DESCRIPTION = (
    "An independent checker of a fault run: the history the clients recorded against the log."
)


def check(history_path: str | Path, bootstrap: str, region: str) -> Verdict:
    history = read_history(history_path)
    return check_records(history, read_records(bootstrap, region), region)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.jepsen.checker", description=DESCRIPTION)
    parser.add_argument("--history", required=True, type=Path)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--region", required=True)
    args = parser.parse_args(argv)
    verdict = check(args.history, args.bootstrap, args.region)
    print(verdict.report())
    return 0 if verdict.ok else 1
