"""An independent checker of a fault run: the history the clients recorded against the log.

``check(history, bootstrap, region)`` reads ``<region>.ledger``, ``<region>.requests``,
``<region>.purchases``, ``<region>.ledger-state-changelog`` (and, if it exists,
``<region>.ledger-checkpoints``) from offset 0 to their end, committed records only, and
checks the history (``tests.jepsen.history``) against them. Run it once the service is
idle and every request is past its deadline plus the refund grace, or open requests and
a cut between topics are reported as problems.

``check_records(history, records, region)`` is the same check over records already in
memory: the unit tests feed it synthetic topic contents.

Independence: this module imports nothing of the service (only the standard library,
``confluent_kafka`` and its sibling ``history``). What it knows of the wire, it learnt by
reading the service's code, and re-implements here:

- topic names ``<region>.ledger|requests|purchases|ledger-state-changelog|
  ledger-checkpoints`` (core/topics.py); every record is JSON, key = client id;
- a ledger entry (schemas/events.py) carries ``type``, ``client_id``, ``seq`` (1, 2, ...
  per client), ``balance_after`` and ``prev_hash``; the first entry of a client is
  ``AccountOpened`` (seq 1, balance 0, prev_hash 64 zeros). ``TokensCredited`` (+tokens,
  ``purchase_id``), ``TokensCharged`` (-tokens, ``request_id``, ``kind``),
  ``MemeRejected`` (``request_id``, ``reason`` 1 unknown client, 2 idempotency conflict,
  3 insufficient tokens), ``MemeDelivered`` (``request_id``, ``meme_id``), ``TokensRefunded``
  (+tokens, ``request_id``, ``reason`` 1 generator failed, 2 deadline expired),
  ``SubscriptionChanged`` (``active``, ``until_ms``), ``PersonalDataErased`` (no change);
- an entry's hash is the sha256 of its JSON, and the processor writes exactly that JSON
  as the record value (schemas ``entry_hash`` and ``dump``; processors/ledger/outputs.py),
  so the hash is sha256 of the record's bytes; the next entry's ``prev_hash`` is it;
- a partition's chain head (ledger/audit.py ``_roll``) is
  ``sha256(head_hex + entry_hash_hex)`` over its entries in offset order from 64 zeros;
  a checkpoint record is ``{"topic","partition","offset","head","signature"}`` (its HMAC
  needs the signing key, a secret this checker does not hold: only heads are checked);
- the changelog (ledger/state.py) is keyed ``a/<client>`` (the account: balance, seq,
  counters, subscription, ``last_hash``), ``r/<client>/<request>`` (the request record:
  status, kind, tokens, fingerprint, deadline_ms, waiters, reasons, meme),
  ``q/<client>/<request>`` (pending index, value = deadline_ms, deleted when the request
  ends) and ``p/<client>/<purchase>`` (the credit); a null value deletes;
- ``MemeRequested`` (requests topic) carries ``request_id``, ``fingerprint``, ``query``,
  ``deadline_ms`` and ``occurred_at_ms`` (the API's wall clock); ``ClientRegistered`` and
  ``TokensPurchased`` (purchases topic) carry ``api_key_sha256`` and ``purchase_id``/``tokens``;
- with an ``Idempotency-Key`` the request id is ``uuid5(NAMESPACE_URL, "maas:" + client_id
  + ":" + key).hex`` (core/ids.py, api/routes/memes.py), else random; answers carry it
  in ``request_id`` except 402, whose body has only ``balance``;
- HTTP answers (api/routes, api/errors.py): /memes 200 ``{request_id, meme_id, kind,
  tokens_charged, ...}``; 402 ``insufficient_tokens``; 409 ``conflict`` (same key, other
  parameters) or ``request_in_progress``; 502 ``generation_failed`` (refunded); 504
  ``deadline_exceeded`` (after the append: with ``refunded: true`` when the ledger
  refunded on the deadline); 503 (maybe not appended); 401 from the ledger means it did
  not know the client (nothing stored). POST /v1/clients 201 (202 ``pending``: appended,
  not confirmed) ``{client_id, api_key}``; purchases 201 new / 200 repeat ``{purchase_id,
  tokens, balance_after, seq}`` of the credit entry, 409 other amount; /v1/me the account
  view at ``seq``; /v1/requests/{id} the request record's view.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from tests.jepsen.history import read_history

Json = dict[str, Any]

GENESIS_HASH = "0" * 64
QUERY_PREFIX = "jepsen "  # the workload's query is QUERY_PREFIX + logical
MAX_PROBLEM_LINES = 50
# The API stamps MemeRequested.occurred_at_ms between the client's invoke and complete
# (same machine); the slack covers clock granularity when matching an attempt by time.
MATCH_SLACK_MS = 2_000
READ_TIMEOUT_S = 120.0

REJECT_UNKNOWN_CLIENT = 1
REJECT_INSUFFICIENT_TOKENS = 3
REFUND_GENERATOR_FAILED = 1
REFUND_DEADLINE_EXPIRED = 2
FINAL = ("rejected", "delivered", "refunded")
# The account view (/v1/me) and the account record share these fields.
VIEW_FIELDS = (
    "balance",
    "seq",
    "memes_requested",
    "memes_delivered",
    "tokens_credited",
    "tokens_charged",
    "tokens_refunded",
    "ai_active",
    "ai_until_ms",
)
# What a meme attempt was told, and which of those say the request is in the log.
ACKNOWLEDGED = frozenset({"200", "402", "502", "504", "504_refunded", "409_in_progress"})


class Topics(NamedTuple):
    ledger: str
    requests: str
    purchases: str
    changelog: str
    checkpoints: str


def topics_of(region: str) -> Topics:
    return Topics(
        f"{region}.ledger",
        f"{region}.requests",
        f"{region}.purchases",
        f"{region}.ledger-state-changelog",
        f"{region}.ledger-checkpoints",
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


# --- the log, parsed -------------------------------------------------------------------


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
    purchased: dict[tuple[str, str], list[Json]] = field(default_factory=dict)
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
    "TokensPurchased": ("client_id", "purchase_id", "tokens"),
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
    purchased: dict[tuple[str, str], list[Json]] = defaultdict(list)
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
        elif kind == "TokensPurchased":
            purchased[body["client_id"], body["purchase_id"]].append(body)
    log.meme_requests, log.by_query = dict(meme_requests), dict(by_query)
    log.registered, log.purchased = dict(registered), dict(purchased)
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


# --- the fold: what the ledger topic says, by our own reading --------------------------


@dataclass
class Account:
    client_id: str
    api_key_sha256: str
    partition: int
    balance: int = 0
    seq: int = 0
    memes_requested: int = 0
    memes_delivered: int = 0
    tokens_credited: int = 0
    tokens_charged: int = 0
    tokens_refunded: int = 0
    ai_active: bool = False
    ai_until_ms: int | None = None
    last_hash: str = GENESIS_HASH
    # The account view after each seq: what /v1/me answered at that seq.
    views: dict[int, tuple[Any, ...]] = field(default_factory=dict)

    def view(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in VIEW_FIELDS)


@dataclass
class Request:
    """Every ledger entry of one request id, and the status the live fold would hold."""

    client_id: str
    request_id: str
    charges: list[Json] = field(default_factory=list)
    rejections: list[Json] = field(default_factory=list)
    deliveries: list[Json] = field(default_factory=list)
    refunds: list[Json] = field(default_factory=list)
    status: str | None = None  # charged, delivered, refunded, rejected

    @property
    def ends(self) -> int:
        return len(self.rejections) + len(self.deliveries) + len(self.refunds)

    @property
    def outcome(self) -> str:
        """The final word: one of FINAL, "open" (charged, not ended) or "none"."""
        if self.status is None:
            return "none"
        return "open" if self.status == "charged" else self.status


@dataclass
class Fold:
    accounts: dict[str, Account] = field(default_factory=dict)
    requests: dict[tuple[str, str], Request] = field(default_factory=dict)
    credits: dict[tuple[str, str], list[Json]] = field(default_factory=dict)
    heads: dict[int, dict[int, str]] = field(default_factory=dict)  # partition -> offset -> head


def fold_ledger(entries: list[Entry], problems: Problems) -> Fold:
    """Fold every entry in log order; problems of the chain and balances on the way.

    After a bad entry the fold takes the entry as written (its seq, balance and hash),
    so that one bad entry is one problem, not a cascade.
    """
    fold = Fold()
    head: dict[int, str] = {}
    for entry in entries:
        previous = head.get(entry.partition, GENESIS_HASH)
        head[entry.partition] = roll(previous, entry.hash)
        fold.heads.setdefault(entry.partition, {})[entry.offset] = head[entry.partition]
        if _apply_to_account(fold, entry, problems):
            _apply_to_request(fold, entry, problems)
    return fold


def _where(entry: Entry) -> str:
    body = entry.body
    return (
        f"client={body.get('client_id')} seq={body.get('seq')} type={body.get('type')} "
        f"partition={entry.partition} offset={entry.offset}"
    )


def _apply_to_account(fold: Fold, entry: Entry, problems: Problems) -> bool:
    """Check and apply one entry to its account; False if it was a duplicate seq."""
    body = entry.body
    client_id, seq, kind = body["client_id"], body["seq"], body["type"]
    account = fold.accounts.get(client_id)
    if account is None:
        if kind != "AccountOpened" or seq != 1:
            problems.add("account", f"{_where(entry)}: first entry is not AccountOpened seq 1")
        account = Account(client_id, body.get("api_key_sha256", ""), entry.partition)
        fold.accounts[client_id] = account
    elif kind == "AccountOpened":
        problems.add("account", f"{_where(entry)}: a second AccountOpened")
    if account.partition != entry.partition:
        problems.add("account", f"{_where(entry)}: client also in partition {account.partition}")
    if seq <= account.seq:
        problems.add("account", f"{_where(entry)}: seq again after seq {account.seq}")
        return False
    if seq > account.seq + 1:
        problems.add("account", f"{_where(entry)}: seqs {account.seq + 1}..{seq - 1} missing")
    elif body["prev_hash"] != account.last_hash:
        problems.add("account", f"{_where(entry)}: prev_hash is not the hash of seq {seq - 1}")
    delta = _apply_counters(account, body)
    balance_after = body["balance_after"]
    if seq == account.seq + 1 and balance_after != account.balance + delta:
        problems.add(
            "account",
            f"{_where(entry)}: balance_after {balance_after}, expected "
            f"{account.balance} {delta:+d} = {account.balance + delta}",
        )
    if balance_after < 0:
        problems.add("account", f"{_where(entry)}: negative balance_after {balance_after}")
    account.seq, account.balance, account.last_hash = seq, balance_after, entry.hash
    account.views[seq] = account.view()
    return True


def _apply_counters(account: Account, body: Json) -> int:
    """The entry's effect on the counters; returns its effect on the balance."""
    match body["type"]:
        case "TokensCredited":
            account.tokens_credited += body["tokens"]
            return int(body["tokens"])
        case "TokensCharged":
            account.tokens_charged += body["tokens"]
            account.memes_requested += 1
            return -int(body["tokens"])
        case "MemeRejected":
            account.memes_requested += 1
        case "MemeDelivered":
            account.memes_delivered += 1
        case "TokensRefunded":
            account.tokens_refunded += body["tokens"]
            return int(body["tokens"])
        case "SubscriptionChanged":
            account.ai_active, account.ai_until_ms = body["active"], body.get("until_ms")
    return 0


# How each entry moves a request: the statuses it may follow, and where it goes.
TRANSITIONS: dict[str, tuple[tuple[str | None, ...], str]] = {
    "TokensCharged": ((None,), "charged"),
    "MemeRejected": ((None,), "rejected"),
    "MemeDelivered": (("charged",), "delivered"),
    "TokensRefunded": (("charged",), "refunded"),
}
LISTS = {
    "TokensCharged": "charges",
    "MemeRejected": "rejections",
    "MemeDelivered": "deliveries",
    "TokensRefunded": "refunds",
}


def _apply_to_request(fold: Fold, entry: Entry, problems: Problems) -> None:
    body = entry.body
    kind = body["type"]
    if kind == "TokensCredited":
        fold.credits.setdefault((body["client_id"], body["purchase_id"]), []).append(body)
        return
    if kind not in TRANSITIONS:
        if kind not in ("AccountOpened", "SubscriptionChanged", "PersonalDataErased"):
            problems.add("log", f"{_where(entry)}: unknown entry type")
        return
    key = (body["client_id"], body["request_id"])
    request = fold.requests.get(key) or Request(*key)
    fold.requests[key] = request
    getattr(request, LISTS[kind]).append(body)
    allowed, to = TRANSITIONS[kind]
    if request.status in allowed:
        request.status = to
    else:
        problems.add(
            "outcome",
            f"client={key[0]} request={key[1]}: {kind} (seq {body['seq']}) after "
            f"{request.status or 'nothing'}",
        )


# --- the history, indexed --------------------------------------------------------------


@dataclass
class Logical:
    logical: str
    op: str
    client_id: str | None
    attempts: list[Json]


def index_history(history: list[Json], problems: Problems) -> dict[str, Logical]:
    ops: dict[str, Logical] = {}
    for line in sorted(history, key=lambda h: (h["logical"], h["attempt"])):
        client_id = line["client_id"]
        if line["op"] == "register" and isinstance(line["response"], dict):
            client_id = line["response"].get("client_id") or client_id
        op = ops.get(line["logical"])
        if op is None:
            ops[line["logical"]] = Logical(line["logical"], line["op"], client_id, [line])
            continue
        if op.op != line["op"] or (op.op != "register" and op.client_id != client_id):
            problems.add("history", f"logical={op.logical}: attempts disagree on op or client")
        op.client_id = op.client_id or client_id
        op.attempts.append(line)
    for op in ops.values():
        if op.op == "meme" and _query(op.attempts[0]) != QUERY_PREFIX + op.logical:
            problems.add("history", f"logical={op.logical}: query is not '{QUERY_PREFIX}<logical>'")
    return ops


def _query(attempt: Json) -> str | None:
    params = attempt.get("params") or {}
    query = params.get("query")
    return query if isinstance(query, str) else None


def _response(attempt: Json) -> Json:
    response = attempt.get("response")
    return response if isinstance(response, dict) else {}


def told(attempt: Json) -> str:
    """What an attempt was told, as a short code: "200", "409_conflict", "none", ..."""
    status = attempt["status"]
    if status is None:
        return "none"
    error = _response(attempt).get("error")
    if status == 409:
        return "409_in_progress" if error == "request_in_progress" else "409_conflict"
    if status == 504 and _response(attempt).get("refunded"):
        return "504_refunded"
    return str(status)


# --- the checks ------------------------------------------------------------------------


@dataclass
class Context:
    log: Log
    fold: Fold
    ops: dict[str, Logical]
    problems: Problems
    stats: Counter[str]

    def request(self, client_id: str, request_id: str) -> Request:
        return self.fold.requests.get((client_id, request_id)) or Request(client_id, request_id)

    def clients(self) -> set[str]:
        return {op.client_id for op in self.ops.values() if op.client_id}


def attempt_request_ids(ctx: Context, attempt: Json) -> tuple[str, ...]:
    """The request id(s) one meme attempt named: from its answer, its Idempotency-Key, or
    (a 402 has no request id, and a keyless request is named by the server) the
    MemeRequested of its query stamped within the attempt's time."""
    client_id = attempt["client_id"]
    named = _response(attempt).get("request_id")
    if isinstance(named, str):
        return (named,)
    if attempt["idempotency_key"]:
        return (stable_request_id(client_id, attempt["idempotency_key"]),)
    low, high = attempt["invoke_ms"] - MATCH_SLACK_MS, attempt["complete_ms"] + MATCH_SLACK_MS
    events = ctx.log.by_query.get((client_id, _query(attempt) or ""), [])
    near = (e["request_id"] for e in events if low <= e["occurred_at_ms"] <= high)
    return tuple(dict.fromkeys(near))


def check_requests(ctx: Context) -> None:
    """Checks 1 and 2 over every request id in the log: at most one charge, a charged
    request ends exactly once (never both ways), a rejected one is never charged, and a
    request that reached the log has exactly one final outcome."""
    keys = set(ctx.fold.requests) | set(ctx.log.meme_requests)
    for client_id, request_id in sorted(keys):
        request = ctx.request(client_id, request_id)
        ctx.stats[f"outcome_{request.outcome}"] += 1
        for problem in _request_problems(request):
            ctx.problems.add("outcome", f"client={client_id} request={request_id}: {problem}")
        if request.outcome == "none" and not _told_unknown_client(ctx, client_id, request_id):
            ctx.problems.add(
                "acknowledged",
                f"client={client_id} request={request_id}: MemeRequested in the log, "
                "no outcome in the ledger",
            )


def _request_problems(request: Request) -> Iterator[str]:
    if len(request.charges) > 1:
        yield f"charged {len(request.charges)} times"
    if request.rejections and (request.charges or request.deliveries or request.refunds):
        yield "rejected and also charged or ended"
    if request.deliveries and request.refunds:
        yield "both delivered and refunded"
    if request.ends > 1:
        yield f"{request.ends} final outcomes"
    if request.charges and not (request.deliveries or request.refunds):
        yield "charged and still open: never delivered nor refunded"
    if (request.deliveries or request.refunds) and not request.charges:
        yield "ended without a charge"
    if request.charges:
        charged = request.charges[0]
        for refund in request.refunds:
            if refund["tokens"] != charged["tokens"]:
                yield f"refunded {refund['tokens']} tokens of {charged['tokens']} charged"
        for delivered in request.deliveries:
            if delivered["kind"] != charged["kind"]:
                yield f"charged a {charged['kind']} meme, delivered {delivered['kind']}"


def _told_unknown_client(ctx: Context, client_id: str, request_id: str) -> bool:
    """A 401 from /memes is the ledger's "unknown client" rejection: nothing is stored,
    so such a request has no outcome by design."""
    for event in ctx.log.meme_requests.get((client_id, request_id), []):
        op = ctx.ops.get(event["query"].removeprefix(QUERY_PREFIX))
        if op and any(a["status"] == 401 for a in op.attempts):
            return True
    return False


def check_memes(ctx: Context) -> None:
    """Checks 1 and 6 per attempt: an acknowledged request is in the ledger, and what
    the client was told agrees with the ledger's final word."""
    for op in ctx.ops.values():
        if op.op != "meme":
            continue
        ctx.stats["meme_ops"] += 1
        delivered: dict[str, set[str]] = defaultdict(set)
        for attempt in op.attempts:
            code = told(attempt)
            ctx.stats["meme_attempts"] += 1
            ctx.stats[f"told_{code}"] += 1
            request_ids = attempt_request_ids(ctx, attempt)
            where = f"client={op.client_id} logical={op.logical} attempt={attempt['attempt']}"
            if code in ACKNOWLEDGED and not _in_log(ctx, attempt["client_id"], request_ids):
                ctx.problems.add(
                    "acknowledged",
                    f"{where}: told {code}, request "
                    f"{'|'.join(request_ids) or '?'} is neither in the requests topic nor "
                    "in the ledger",
                )
                continue
            problem = _told_problem(ctx, attempt, code, request_ids)
            if problem:
                ctx.problems.add("told", f"{where} request={'|'.join(request_ids)}: {problem}")
            if code == "200":
                delivered[request_ids[0]].add(_response(attempt).get("meme_id", ""))
        for request_id, meme_ids in delivered.items():
            if len(meme_ids) > 1:
                ctx.problems.add(
                    "told",
                    f"client={op.client_id} request={request_id}: told 200 with "
                    f"different memes {sorted(meme_ids)}",
                )
        ctx.stats["meme_retries"] += len(op.attempts) - 1


def _in_log(ctx: Context, client_id: str, request_ids: tuple[str, ...]) -> bool:
    return any(
        (client_id, r) in ctx.log.meme_requests or (client_id, r) in ctx.fold.requests
        for r in request_ids
    )


def _told_problem(
    ctx: Context, attempt: Json, code: str, request_ids: tuple[str, ...]
) -> str | None:
    """None if some request the attempt may have named agrees with what it was told."""
    if not request_ids:
        return None  # named nothing we can find, and was not acknowledged: indeterminate
    problems = [
        _disagreement(ctx, attempt, code, ctx.request(attempt["client_id"], r)) for r in request_ids
    ]
    if any(p is None for p in problems):
        return None
    return "; ".join(p for p in problems if p)


def _disagreement(ctx: Context, attempt: Json, code: str, request: Request) -> str | None:
    outcome = request.outcome
    match code:
        case "200":
            meme_id = _response(attempt).get("meme_id")
            if outcome != "delivered":
                return f"told 200 meme_id={meme_id}, ledger says {outcome}"
            entry = request.deliveries[0]
            if entry["meme_id"] != meme_id:
                return f"told 200 meme_id={meme_id}, ledger delivered meme_id={entry['meme_id']}"
            charged, price = _response(attempt).get("tokens_charged"), request.charges[0]["tokens"]
            if charged is not None and charged != price:
                return f"told tokens_charged={charged}, ledger charged {price}"
        case "402":
            reasons = [r["reason"] for r in request.rejections]
            if request.charges or reasons != [REJECT_INSUFFICIENT_TOKENS]:
                return f"told 402, ledger says {outcome} (reject reasons {reasons})"
        case "409_conflict":
            events = ctx.log.meme_requests.get((request.client_id, request.request_id), [])
            if len({e["fingerprint"] for e in events}) < 2:
                return "told 409 conflict, but every MemeRequested of it has one fingerprint"
        case "409_in_progress" | "504":
            if outcome not in FINAL:
                return f"told {code}, ledger says {outcome}: no single final outcome"
        case "502":
            if not _refunded_for(request, REFUND_GENERATOR_FAILED):
                return f"told 502, ledger says {outcome} (not refunded: generator failed)"
        case "504_refunded":
            if not _refunded_for(request, REFUND_DEADLINE_EXPIRED):
                return f"told 504 refunded, ledger says {outcome} (not refunded: deadline)"
    return None


def _refunded_for(request: Request, reason: int) -> bool:
    return request.outcome == "refunded" and request.refunds[0]["reason"] == reason


def check_unsent_charges(ctx: Context) -> None:
    """Check 3: every charge answers a MemeRequested whose query is a meme op of the
    history, of the same client."""
    for (client_id, request_id), request in sorted(ctx.fold.requests.items()):
        if not request.charges:
            continue
        events = ctx.log.meme_requests.get((client_id, request_id), [])
        sent = False
        for event in events:
            op = ctx.ops.get(event["query"].removeprefix(QUERY_PREFIX))
            sent = sent or bool(
                event["query"].startswith(QUERY_PREFIX)
                and op
                and op.op == "meme"
                and op.client_id == client_id
            )
        if not sent:
            why = "no MemeRequested" if not events else "no meme op of this client in the history"
            ctx.problems.add(
                "unsent", f"client={client_id} request={request_id}: charged, but {why}"
            )


def check_accounts(ctx: Context) -> None:
    """Check 4 (the chain and seq were checked by the fold): conservation, and every
    /v1/me answer equals the fold at the seq it names."""
    for client_id, account in sorted(ctx.fold.accounts.items()):
        expected = account.tokens_credited - account.tokens_charged + account.tokens_refunded
        if expected != account.balance:
            ctx.problems.add(
                "account",
                f"client={client_id}: credited - charged + refunded = {expected}, "
                f"final balance {account.balance}",
            )
    last_me: dict[str, Json] = {}
    for op in ctx.ops.values():
        if op.op != "me" or op.client_id is None:
            continue
        for attempt in op.attempts:
            if attempt["status"] == 200:
                _check_me(ctx, op.client_id, _response(attempt))
                latest = last_me.get(op.client_id)
                if latest is None or attempt["complete_ms"] >= latest["complete_ms"]:
                    last_me[op.client_id] = attempt
    for client_id, attempt in last_me.items():
        final = ctx.fold.accounts.get(client_id)
        if final and _response(attempt).get("seq") != final.seq:
            ctx.stats["me_last_before_final_seq"] += 1  # e.g. a deadline refund came later


def _check_me(ctx: Context, client_id: str, view: Json) -> None:
    ctx.stats["me_answers"] += 1
    account = ctx.fold.accounts.get(client_id)
    seq = view.get("seq")
    folded = account.views.get(seq) if account and isinstance(seq, int) else None
    if folded is None:
        ctx.problems.add(
            "account",
            f"client={client_id}: /v1/me answered seq {seq}, "
            f"the ledger has no such entry (last seq {account.seq if account else None})",
        )
        return
    wrong = [
        f"{name}={view.get(name)} (ledger {value})"
        for name, value in zip(VIEW_FIELDS, folded, strict=True)
        if view.get(name) != value
    ]
    if wrong:
        ctx.problems.add("account", f"client={client_id} seq={seq}: /v1/me told {', '.join(wrong)}")


def check_checkpoints(ctx: Context, ledger_topic: str) -> None:
    """Check 4, the partition chains: every checkpoint's head is our roll at its offset."""
    for checkpoint in ctx.log.checkpoints:
        if checkpoint.get("topic") != ledger_topic:
            continue
        ctx.stats["checkpoints"] += 1
        partition, offset = checkpoint["partition"], checkpoint["offset"]
        heads = ctx.fold.heads.get(partition, {})
        if heads and offset > max(heads):
            # Signed after this read began: the read stops at the end it saw first.
            ctx.stats["checkpoints_beyond_read"] += 1
            continue
        head = GENESIS_HASH if offset < 0 else heads.get(offset)
        if head != checkpoint["head"]:
            found = "no entry at that offset" if head is None else "head differs"
            ctx.problems.add(
                "account", f"checkpoint partition={partition} offset={offset}: {found}"
            )


def check_writes(ctx: Context) -> None:
    """Check 5: acknowledged registrations and purchases are in the ledger, once, as
    told; and every account and credit answers an input that was sent."""
    for op in ctx.ops.values():
        if op.op == "register":
            _check_register(ctx, op)
        elif op.op == "purchase":
            _check_purchase(ctx, op)
    for client_id in sorted(ctx.fold.accounts):
        sent = ctx.log.registered.get(client_id, [])
        opened = ctx.fold.accounts[client_id].api_key_sha256
        if not any(e.get("api_key_sha256") == opened for e in sent):
            ctx.problems.add("missing", f"client={client_id}: AccountOpened, no ClientRegistered")
    for (client_id, purchase_id), credits in sorted(ctx.fold.credits.items()):
        ctx.stats["credits"] += len(credits)
        where = f"client={client_id} purchase={purchase_id}"
        if len(credits) > 1:
            ctx.problems.add("missing", f"{where}: credited {len(credits)} times")
        sent = ctx.log.purchased.get((client_id, purchase_id), [])
        if not any(e["tokens"] == credits[0]["tokens"] for e in sent):
            ctx.problems.add("missing", f"{where}: credited, no TokensPurchased of that amount")


def _check_register(ctx: Context, op: Logical) -> None:
    for attempt in op.attempts:
        if attempt["status"] not in (201, 202):  # 202: appended, not confirmed yet
            continue
        ctx.stats["registrations_acknowledged"] += 1
        client_id = _response(attempt).get("client_id")
        account = ctx.fold.accounts.get(client_id or "")
        api_key = _response(attempt).get("api_key", "")
        if account is None:
            ctx.problems.add("missing", f"client={client_id}: told {attempt['status']}, no account")
        elif account.api_key_sha256 != hashlib.sha256(api_key.encode()).hexdigest():
            ctx.problems.add("missing", f"client={client_id}: opened with another key's hash")


def _check_purchase(ctx: Context, op: Logical) -> None:
    ctx.stats["purchase_ops"] += 1
    body = op.attempts[0].get("body") or {}
    purchase_id, tokens = body.get("purchase_id"), body.get("tokens")
    credits = ctx.fold.credits.get((op.client_id or "", purchase_id or ""), [])
    where = f"client={op.client_id} purchase={purchase_id}"
    for attempt in op.attempts:
        status, answer = attempt["status"], _response(attempt)
        if status in (200, 201):
            if len(credits) != 1 or credits[0]["tokens"] != tokens:
                amounts = [c["tokens"] for c in credits]
                ctx.problems.add("missing", f"{where}: told {status}, {tokens} tokens: {amounts}")
                continue
            told_entry = {k: answer.get(k) for k in ("tokens", "balance_after", "seq")}
            if told_entry != {k: credits[0][k] for k in told_entry}:
                ctx.problems.add("told", f"{where}: told {told_entry}, ledger {credits[0]}")
        elif status == 409 and not any(c["tokens"] != tokens for c in credits):
            ctx.problems.add("told", f"{where}: told 409, but no credit of another amount")


def check_lookups(ctx: Context) -> None:
    """Check 6 for /v1/requests/{id}: the record's view agrees with the ledger."""
    for op in ctx.ops.values():
        if op.op != "lookup" or op.client_id is None:
            continue
        for attempt in op.attempts:
            if attempt["status"] != 200:
                continue
            ctx.stats["lookups_answered"] += 1
            view = _response(attempt)
            request = ctx.request(op.client_id, str(view.get("request_id")))
            problem = _lookup_problem(view, request)
            if problem:
                ctx.problems.add(
                    "told", f"client={op.client_id} request={request.request_id}: {problem}"
                )


def _lookup_problem(view: Json, request: Request) -> str | None:
    status = view.get("status")
    if status == "charged":
        return None if request.charges else "lookup said charged, the ledger has no charge"
    if status != request.outcome:
        return f"lookup said {status}, the ledger says {request.outcome}"
    if status == "delivered":
        told_id, meme_id = (view.get("meme") or {}).get("meme_id"), request.deliveries[0]["meme_id"]
        if told_id != meme_id:
            return f"lookup meme_id={told_id}, ledger meme_id={meme_id}"
    if status == "refunded" and view.get("refund_reason") != request.refunds[0]["reason"]:
        return f"lookup refund_reason={view.get('refund_reason')}, ledger differs"
    if status == "rejected" and view.get("reject_reason") != request.rejections[0]["reason"]:
        return f"lookup reject_reason={view.get('reject_reason')}, ledger differs"
    return None


# --- check 7: replay equals live -------------------------------------------------------


Live = dict[tuple[str, ...], Json]


def check_replay(ctx: Context) -> None:
    """Our fold of the ledger from offset 0 against the live state in the changelog."""
    live: dict[str, Live] = defaultdict(dict)
    pending: dict[tuple[str, ...], bytes] = {}
    for key, value in ctx.log.changelog.items():
        prefix, _, rest = key.partition("/")
        parts = tuple(rest.split("/", 1))
        if prefix not in ("a", "r", "q", "p") or len(parts) != (1 if prefix == "a" else 2):
            ctx.stats["changelog_other_keys"] += 1
        elif prefix == "q":
            pending[parts] = value  # the deadline as digits, not JSON
        else:
            live[prefix][parts] = _live_json(ctx, key, value)
    ctx.stats["changelog_live_keys"] = len(ctx.log.changelog)
    _replay_accounts(ctx, live["a"])
    _replay_requests(ctx, live["r"])
    _replay_pending(ctx, pending, live["r"])
    _replay_purchases(ctx, live["p"])


def _live_json(ctx: Context, key: str, raw: bytes) -> Json:
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        value = None
    if not isinstance(value, dict):
        ctx.problems.add("replay", f"changelog key {key}: value is not a JSON object")
        return {}
    return value


def _differences(live: Json, expected: Json) -> str:
    return ", ".join(
        f"{name}: live {live.get(name)!r}, replay {value!r}"
        for name, value in expected.items()
        if live.get(name) != value
    )


def _compare(ctx: Context, what: str, live: Json | None, expected: Json | None) -> None:
    if live is None:
        ctx.problems.add("replay", f"{what}: in the ledger, no live record")
        return
    if expected is None:
        ctx.problems.add("replay", f"{what}: live record, nothing in the ledger")
        return
    wrong = _differences(live, expected)
    if wrong:
        ctx.problems.add("replay", f"{what}: {wrong}")


def _replay_accounts(ctx: Context, live: Live) -> None:
    for (client_id,) in sorted(set(live) | {(c,) for c in ctx.fold.accounts}):
        account = ctx.fold.accounts.get(client_id)
        expected = None
        if account is not None:
            fields = ("client_id", "api_key_sha256", *VIEW_FIELDS, "last_hash")
            expected = {name: getattr(account, name) for name in fields}
        _compare(ctx, f"account client={client_id}", live.get((client_id,)), expected)


def _expected_request(ctx: Context, request: Request, live: Json) -> Json:
    expected: Json = {"status": request.status}
    if request.charges:
        charge = request.charges[0]
        expected |= {"kind": charge["kind"], "tokens": charge["tokens"]}
    else:
        expected |= {"kind": None}
    expected["reject_reason"] = request.rejections[0]["reason"] if request.rejections else None
    expected["refund_reason"] = request.refunds[0]["reason"] if request.refunds else None
    expected["meme"] = request.deliveries[0] if request.deliveries else None
    if request.status != "charged":
        expected["waiters"] = []  # an ended request has no one waiting
    # Fingerprint and deadline come from the MemeRequested that made the record: it must
    # be one the API appended for this request id.
    events = ctx.log.meme_requests.get((request.client_id, request.request_id), [])
    made_by = [
        e
        for e in events
        if e["fingerprint"] == live.get("fingerprint")
        and (not request.charges or e["deadline_ms"] == live.get("deadline_ms"))
    ]
    if not made_by:
        expected["fingerprint"] = sorted({e["fingerprint"] for e in events})
    return expected


def _replay_requests(ctx: Context, live: Live) -> None:
    folded = {k: r for k, r in ctx.fold.requests.items() if r.status is not None}
    for key in sorted(set(live) | set(folded)):
        what = f"request client={key[0]} request={key[1]}"
        request, record = folded.get((key[0], key[1])), live.get(key)
        if request is None or record is None:
            _compare(ctx, what, record, None if request is None else {})
            continue
        _compare(ctx, what, record, _expected_request(ctx, request, record))


def _replay_pending(ctx: Context, live: dict[tuple[str, ...], bytes], records: Live) -> None:
    """The pending index holds exactly the open requests, with their deadline."""
    open_now = {k for k, r in ctx.fold.requests.items() if r.status == "charged"}
    for key in sorted(set(live) | open_now):
        what = f"pending client={key[0]} request={key[1]}"
        if key not in live or key not in open_now:
            state = "no pending key" if key not in live else "pending key"
            ctx.problems.add("replay", f"{what}: {state}, replay says {ctx.request(*key).outcome}")
            continue
        if live[key] != str(records.get(key, {}).get("deadline_ms")).encode():
            ctx.problems.add("replay", f"{what}: deadline {live[key]!r} not the record's")


def _replay_purchases(ctx: Context, live: Live) -> None:
    for key in sorted(set(live) | set(ctx.fold.credits)):
        credits = ctx.fold.credits.get((key[0], key[1]))
        expected = None
        if credits:
            expected = {"tokens": credits[0]["tokens"], "credited": credits[0]}
        _compare(ctx, f"purchase client={key[0]} purchase={key[1]}", live.get(key), expected)


# --- the verdict ------------------------------------------------------------------------


def check_records(history: list[Json], records: Iterable[Record], region: str) -> Verdict:
    """Every check, over a history and the topics' records already in memory."""
    problems = Problems()
    log = parse_log(records, region, problems)
    ctx = Context(
        log,
        fold_ledger(log.entries, problems),
        index_history(history, problems),
        problems,
        Counter(),
    )
    check_requests(ctx)
    check_memes(ctx)
    check_unsent_charges(ctx)
    check_accounts(ctx)
    check_checkpoints(ctx, topics_of(region).ledger)
    check_writes(ctx)
    check_lookups(ctx)
    check_replay(ctx)
    return _verdict(ctx)


def _verdict(ctx: Context) -> Verdict:
    stats = ctx.stats
    stats["history_lines"] = sum(len(op.attempts) for op in ctx.ops.values())
    stats["logical_ops"] = len(ctx.ops)
    stats["retries"] = stats["history_lines"] - len(ctx.ops)
    stats["clients"] = len(ctx.clients())
    stats["ledger_entries"] = len(ctx.log.entries)
    stats["ledger_clients"] = len(ctx.fold.accounts)
    stats["problems"] = len(ctx.problems.lines)
    for check, count in ctx.problems.by_check.items():
        stats[f"problems_{check}"] = count
    lines = ctx.problems.lines[:MAX_PROBLEM_LINES]
    if len(ctx.problems.lines) > MAX_PROBLEM_LINES:
        lines.append(f"... and {len(ctx.problems.lines) - MAX_PROBLEM_LINES} more problems")
    return Verdict(ok=not ctx.problems.lines, problems=lines, stats=dict(stats))


# --- reading Kafka ----------------------------------------------------------------------


def read_records(bootstrap: str, region: str, timeout_s: float = READ_TIMEOUT_S) -> list[Record]:
    """Every committed record of the region's topics, from offset 0 to the end offset
    each partition had when the read began (later records are left out, so that the
    topics are cut at nearly one moment)."""
    topics = topics_of(region)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"jepsen-checker-{uuid.uuid4().hex}",  # required; never commits
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,  # reads to the end and stops: no long polls
        }
    )
    try:
        ends = _end_offsets(consumer, topics, timeout_s)
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        return _consume_until(consumer, ends, time.monotonic() + timeout_s)
    finally:
        consumer.close()


def _end_offsets(
    consumer: Consumer, topics: Topics, timeout_s: float
) -> dict[tuple[str, int], int]:
    # Listing every topic never creates one; the checkpoints topic is optional.
    metadata = consumer.list_topics(timeout=timeout_s).topics
    missing = [t for t in topics[:4] if t not in metadata]
    if missing:
        raise RuntimeError(f"topics not found: {missing}")
    ends = {}
    for topic in topics:
        if topic not in metadata:
            continue
        for partition in metadata[topic].partitions:
            tp = TopicPartition(topic, partition)
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            if high > low:
                ends[topic, partition] = high
    return ends


def _consume_until(
    consumer: Consumer, ends: dict[tuple[str, int], int], deadline: float
) -> list[Record]:
    records: list[Record] = []
    remaining = set(ends)
    while remaining:
        if time.monotonic() > deadline:
            raise TimeoutError(f"partitions not read to their end: {sorted(remaining)}")
        for msg in consumer.consume(10_000, 1.0):
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset()
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
                # At the end; under read_committed an open transaction ends the read
                # early (its last stable offset), so wait until the end is reached.
                if offset is not None and offset >= ends[topic, partition]:
                    remaining.discard((topic, partition))
                continue
            assert offset is not None  # a record without error has its offset
            if offset < ends[topic, partition]:
                records.append(Record(topic, partition, offset, msg.key(), msg.value()))
            if offset + 1 >= ends[topic, partition]:
                remaining.discard((topic, partition))
    return records


def check(history_path: str | Path, bootstrap: str, region: str) -> Verdict:
    history = read_history(history_path)
    return check_records(history, read_records(bootstrap, region), region)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", required=True, type=Path)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--region", required=True)
    args = parser.parse_args(argv)
    verdict = check(args.history, args.bootstrap, args.region)
    print(verdict.report())
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
