"""``maas replay``: rebuild every balance from the ledger topic and check the guarantees."""

from __future__ import annotations

import argparse
import sys
import time

from ledger.replay import Replay
from maas import logs
from maas.settings import Settings
from maas.topic_reader import read_topic
from maas.topics import Topics
from schemas.events import parse_entry

PROGRESS_EVERY = 50_000


def register(sub: argparse._SubParsersAction) -> None:
    replay = sub.add_parser("replay", help="rebuild balances from the ledger topic")
    replay.add_argument("--client", help="print only this client's account")
    replay.set_defaults(func=_replay)


def replay_ledger(settings: Settings, progress: bool = False) -> Replay:
    replay = Replay()
    started = time.monotonic()
    for msg in read_topic(settings, Topics(settings.region).ledger):
        replay.apply(parse_entry(msg.value()))
        if progress and replay.entries % PROGRESS_EVERY == 0:
            rate = replay.entries / (time.monotonic() - started)
            print(
                f"\rreplayed entries={replay.entries} rate={rate:,.0f}/s",
                end="",
                file=sys.stderr,
                flush=True,
            )
    return replay


def _replay(args: argparse.Namespace) -> int:
    logs.configure("replay")
    settings = Settings.from_env()
    started = time.monotonic()
    replay = replay_ledger(settings, progress=True)
    seconds = time.monotonic() - started
    print(
        f"\nentries={replay.entries} clients={len(replay.accounts)} seconds={seconds:.2f} "
        f"rate={replay.entries / max(seconds, 1e-9):,.0f}/s",
        file=sys.stderr,
    )
    accounts = sorted(replay.accounts.values(), key=lambda a: a.client_id)
    if args.client:
        accounts = [a for a in accounts if a.client_id == args.client]
    print("client_id,balance,credited,charged,refunded,delivered,seq")
    for a in accounts:
        print(
            f"{a.client_id},{a.balance},{a.tokens_credited},{a.tokens_charged},"
            f"{a.tokens_refunded},{a.memes_delivered},{a.seq}"
        )
    problems = replay.violations + replay.conservation()
    for problem in problems:
        print(f"VIOLATION {problem}", file=sys.stderr)
    return 1 if problems else 0
