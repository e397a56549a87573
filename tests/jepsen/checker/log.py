"""The log, parsed: the region's records, read into ledger entries, input events, the
live changelog state and the checkpoints; a record the checks cannot read is a problem."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from tests.jepsen.checker.model import Json, Problems, Record, entry_hash, topics_of


@dataclass(frozen=True, slots=True)
class Entry:
    partition: int
    offset: int
    hash: str
    body: Json


@dataclass
class Log:
    entries: list[Entry] = field(default_factory=list)  # ledger, by (partition, offset)
    # (client, request id) -> its MemeRequested events; (client, query) -> the same
    meme_requests: dict[tuple[str, str], list[Json]] = field(default_factory=dict)
    by_query: dict[tuple[str, str], list[Json]] = field(default_factory=dict)
    registered: dict[str, list[Json]] = field(default_factory=dict)  # ClientRegistered
    rotations: dict[str, list[Json]] = field(default_factory=dict)  # ApiKeyRotationRequested
    purchased: dict[tuple[str, str], list[Json]] = field(default_factory=dict)
    generated: dict[tuple[str, str], list[Json]] = field(default_factory=dict)  # MemeGenerated
    changelog: dict[str, bytes] = field(default_factory=dict)  # live state, last wins
    checkpoints: list[Json] = field(default_factory=list)


def _json(record: Record, problems: Problems) -> Json | None:
    try:
        value = json.loads(record.value or b"")
    except (json.JSONDecodeError, UnicodeDecodeError):
        value = None
    if not isinstance(value, dict):
        problems.add(
            "log",
            f"topic={record.topic} partition={record.partition} "
            f"offset={record.offset}: not a JSON object",
        )
        return None
    return value


# The fields each record kind must have for the checks to read it (schemas/events.py).
ENTRY_FIELDS = ("client_id", "seq", "type", "balance_after", "prev_hash")
REQUIRED: dict[str, tuple[str, ...]] = {
    "AccountOpened": ("api_key_sha256",),
    "ApiKeyRotated": ("api_key_sha256",),
    "TokensCredited": ("purchase_id", "tokens"),
    "TokensCharged": ("request_id", "tokens", "kind"),
    "MemeRejected": ("request_id", "reason"),
    "MemeDelivered": ("request_id", "meme_id", "kind"),
    "TokensRefunded": ("request_id", "tokens", "reason"),
    "SubscriptionChanged": ("active",),
    "MemeRequested": (
        "client_id",
        "request_id",
        "fingerprint",
        "query",
        "deadline_ms",
        "occurred_at_ms",
    ),
    "ClientRegistered": ("client_id", "api_key_sha256"),
    "ApiKeyRotationRequested": ("client_id", "api_key_sha256"),
    "TokensPurchased": ("client_id", "purchase_id", "tokens"),
    "MemeGenerated": ("client_id", "request_id", "meme_id", "occurred_at_ms"),
    "checkpoint": ("topic", "partition", "offset", "head"),
}


def _readable(record: Record, body: Json, kind: str, problems: Problems) -> bool:
    """A record missing a field the checks read is a problem of its own, then skipped."""
    names = REQUIRED.get(kind, ())
    if record.topic.endswith(".ledger"):
        names = ENTRY_FIELDS + names
    missing = [name for name in names if name not in body]
    if missing:
        problems.add(
            "log",
            f"topic={record.topic} partition={record.partition} "
            f"offset={record.offset} type={kind}: missing {missing}",
        )
    return not missing


def parse_log(records: Iterable[Record], region: str, problems: Problems) -> Log:
    topics = topics_of(region)
    log = Log()
    changelog_partition: dict[str, int] = {}
    meme_requests: dict[tuple[str, str], list[Json]] = defaultdict(list)
    by_query: dict[tuple[str, str], list[Json]] = defaultdict(list)
    registered: dict[str, list[Json]] = defaultdict(list)
    rotations: dict[str, list[Json]] = defaultdict(list)
    purchased: dict[tuple[str, str], list[Json]] = defaultdict(list)
    generated: dict[tuple[str, str], list[Json]] = defaultdict(list)
    # Offset order per partition: the order the processor decided in, and "last wins".
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        if record.topic == topics.changelog:
            _changelog_write(log, changelog_partition, record, problems)
            continue
        if record.topic not in topics:
            continue
        body = _json(record, problems)
        if body is None:
            continue
        kind = "checkpoint" if record.topic == topics.checkpoints else str(body.get("type"))
        if not _readable(record, body, kind, problems):
            continue
        if record.topic == topics.ledger:
            log.entries.append(
                Entry(record.partition, record.offset, entry_hash(record.value or b""), body)
            )
        elif record.topic == topics.checkpoints:
            log.checkpoints.append(body)
        elif kind == "MemeRequested":
            meme_requests[body["client_id"], body["request_id"]].append(body)
            by_query[body["client_id"], body["query"]].append(body)
        elif kind == "ClientRegistered":
            registered[body["client_id"]].append(body)
        elif kind == "ApiKeyRotationRequested":
            rotations[body["client_id"]].append(body)
        elif kind == "TokensPurchased":
            purchased[body["client_id"], body["purchase_id"]].append(body)
        elif kind == "MemeGenerated":
            generated[body["client_id"], body["request_id"]].append(body)
    log.meme_requests, log.by_query = dict(meme_requests), dict(by_query)
    log.registered, log.purchased = dict(registered), dict(purchased)
    log.generated, log.rotations = dict(generated), dict(rotations)
    return log


def _changelog_write(
    log: Log, partition_of: dict[str, int], record: Record, problems: Problems
) -> None:
    key = (record.key or b"").decode(errors="replace")
    # A client's state lives in one partition; a key in two would make "last" undefined.
    first = partition_of.setdefault(key, record.partition)
    if first != record.partition:
        problems.add(
            "replay", f"changelog key {key} written in partitions {first} and {record.partition}"
        )
    if record.value is None:
        log.changelog.pop(key, None)  # a tombstone deletes
    else:
        log.changelog[key] = record.value
