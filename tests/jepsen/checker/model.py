"""What every part of the checker shares: the topics, a record, hashes and ids, the
problems found and the verdict."""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, NamedTuple

Json = dict[str, Any]

GENESIS_HASH = "0" * 64
QUERY_PREFIX = "jepsen "  # the workload's query is QUERY_PREFIX + logical
MAX_PROBLEM_LINES = 50


class Topics(NamedTuple):
    ledger: str
    requests: str
    purchases: str
    changelog: str
    checkpoints: str
    outcomes: str


def topics_of(region: str) -> Topics:
    return Topics(
        f"{region}.ledger",
        f"{region}.requests",
        f"{region}.purchases",
        f"{region}.ledger-state-changelog",
        f"{region}.ledger-checkpoints",
        f"{region}.outcomes",
    )


class Record(NamedTuple):
    """One committed record as read from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Verdict:
    ok: bool
    problems: list[str]  # at most MAX_PROBLEM_LINES, then one line counting the rest
    stats: dict[str, int]

    def report(self) -> str:
        head = f"verdict ok={self.ok} problems={self.stats.get('problems', 0)}"
        stats = " ".join(f"{k}={v}" for k, v in sorted(self.stats.items()))
        return "\n".join([head, *self.problems, f"stats {stats}"])


def stable_request_id(client_id: str, idempotency_key: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"maas:{client_id}:{idempotency_key}").hex


def entry_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def roll(head: str, hash_hex: str) -> str:
    return hashlib.sha256(f"{head}{hash_hex}".encode()).hexdigest()


class Problems:
    """Every problem, each named by its check; the verdict shows the first ones."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.by_check: Counter[str] = Counter()

    def add(self, check: str, text: str) -> None:
        self.by_check[check] += 1
        self.lines.append(f"[{check}] {text}")
