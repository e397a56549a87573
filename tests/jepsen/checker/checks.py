"""The checks of requests: 1 (every acknowledged request has exactly one final outcome),
2 (one charge, one end), 3 (no charge for a request the clients never sent), 6 (what
each client was told of a request agrees with the ledger), 8 (the kind charged
follows the client's Memes AI subscription) and 9 (a request refused before its append
in every attempt never reached the log)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from tests.jepsen.checker.context import Context
from tests.jepsen.checker.fold import Request
from tests.jepsen.checker.model import Json, stable_request_id
from tests.jepsen.checker.ops import Logical, query_of, refused, response_of, told

# The API stamps MemeRequested.occurred_at_ms between the client's invoke and complete
# (same machine); the slack covers clock granularity when matching an attempt by time.
MATCH_SLACK_MS = 2_000
LEDGER_UNKNOWN_CLIENT = "the ledger does not know this client"  # the 401's detail
REJECT_INSUFFICIENT_TOKENS = 3
REFUND_GENERATOR_FAILED = 1
REFUND_DEADLINE_EXPIRED = 2
FINAL = ("rejected", "delivered", "refunded")
# What a meme attempt was told, and which of those say the request is in the log.
ACKNOWLEDGED = frozenset({"200", "402", "502", "504", "504_refunded", "409_in_progress"})


def attempt_request_ids(ctx: Context, attempt: Json) -> tuple[str, ...]:
    """The request id(s) one meme attempt named: from its answer, its Idempotency-Key, or
    (a 402 has no request id, and a keyless request is named by the server) the
    MemeRequested of its query stamped within the attempt's time."""
    client_id = attempt["client_id"]
    named = response_of(attempt).get("request_id")
    if isinstance(named, str):
        return (named,)
    if attempt["idempotency_key"]:
        return (stable_request_id(client_id, attempt["idempotency_key"]),)
    low, high = attempt["invoke_ms"] - MATCH_SLACK_MS, attempt["complete_ms"] + MATCH_SLACK_MS
    events = ctx.log.by_query.get((client_id, query_of(attempt) or ""), [])
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
            # An AI caption the content policy blocks falls back to the standard meme
            # (processors/generators/backends.py): ai charged, standard delivered.
            fell_back = (charged["kind"], delivered["kind"]) == ("ai", "standard")
            if delivered["kind"] != charged["kind"] and not fell_back:
                yield f"charged a {charged['kind']} meme, delivered {delivered['kind']}"


def _told_unknown_client(ctx: Context, client_id: str, request_id: str) -> bool:
    """The ledger's "unknown client" rejection (a 401 saying so) stores nothing, so such
    a request has no outcome by design. Not any 401: a key rotated away is refused
    before the append, and must not excuse an earlier attempt's request."""
    for event in ctx.log.meme_requests.get((client_id, request_id), []):
        op = ctx.meme_op(client_id, event)
        if op and any(
            a["status"] == 401 and response_of(a).get("detail") == LEDGER_UNKNOWN_CLIENT
            for a in op.attempts
        ):
            return True
    return False


def check_memes(ctx: Context) -> None:
    """Checks 1 and 6 per attempt: an acknowledged request is in the ledger, and what
    the client was told agrees with the ledger's final word; check 9 per op."""
    for op in ctx.ops.values():
        if op.op != "meme":
            continue
        ctx.stats["meme_ops"] += 1
        _check_refused(ctx, op)
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
                delivered[request_ids[0]].add(response_of(attempt).get("meme_id", ""))
        for request_id, meme_ids in delivered.items():
            if len(meme_ids) > 1:
                ctx.problems.add(
                    "told",
                    f"client={op.client_id} request={request_id}: told 200 with "
                    f"different memes {sorted(meme_ids)}",
                )
        ctx.stats["meme_retries"] += len(op.attempts) - 1


def _check_refused(ctx: Context, op: Logical) -> None:
    """Check 9: an op whose every attempt was refused before the API appended anything
    has no ``MemeRequested``, so no charge. A keyed op is named by its key (its query may
    repeat: ``--memes repeated`` draws queries from a vocabulary); a keyless one by its
    query, which names the op in the workloads that send keyless requests."""
    if not op.attempts or op.client_id is None:
        return
    if not all(refused(a) for a in op.attempts):
        return
    ctx.stats["meme_ops_refused"] += 1
    key = op.attempts[0]["idempotency_key"]
    if key:
        request_id = stable_request_id(op.client_id, key)
        appended = [request_id] if (op.client_id, request_id) in ctx.log.meme_requests else []
    else:
        events = ctx.log.by_query.get((op.client_id, query_of(op.attempts[0]) or ""), [])
        appended = [e["request_id"] for e in events]
    if appended:
        ctx.problems.add(
            "refused",
            f"client={op.client_id} logical={op.logical}: every attempt was refused before "
            f"the append, yet request {appended[0]} is in the requests topic",
        )


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
            meme_id = response_of(attempt).get("meme_id")
            if outcome == "refunded" and _made_in_time(ctx, request, meme_id):
                ctx.stats["free_memes"] += 1  # told by its generator, refunded first
                return None
            if outcome != "delivered":
                return f"told 200 meme_id={meme_id}, ledger says {outcome}"
            entry = request.deliveries[0]
            if entry["meme_id"] != meme_id:
                return f"told 200 meme_id={meme_id}, ledger delivered meme_id={entry['meme_id']}"
            charged, price = (
                response_of(attempt).get("tokens_charged"),
                request.charges[0]["tokens"],
            )
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


def _made_in_time(ctx: Context, request: Request, meme_id: object) -> bool:
    """A 200 the ledger refunded is a free meme, not a lie, only if that very meme is a
    ``MemeGenerated`` of the outcomes topic made by the request's deadline: the ledger
    delivers such a meme unless a refund of the request was folded before it."""
    events = ctx.log.meme_requests.get((request.client_id, request.request_id), [])
    deadlines = [e["deadline_ms"] for e in events]
    return bool(deadlines) and any(
        made["meme_id"] == meme_id and made["occurred_at_ms"] <= min(deadlines)
        for made in ctx.log.generated.get((request.client_id, request.request_id), [])
    )


def _refunded_for(request: Request, reason: int) -> bool:
    return request.outcome == "refunded" and request.refunds[0]["reason"] == reason


def check_unsent_charges(ctx: Context) -> None:
    """Check 3: every charge answers a MemeRequested that is a meme op of the history, of
    the same client (``Context.meme_op``)."""
    for (client_id, request_id), request in sorted(ctx.fold.requests.items()):
        if not request.charges:
            continue
        events = ctx.log.meme_requests.get((client_id, request_id), [])
        sent = any(ctx.meme_op(client_id, event) for event in events)
        if not sent:
            why = "no MemeRequested" if not events else "no meme op of this client in the history"
            ctx.problems.add(
                "unsent", f"client={client_id} request={request_id}: charged, but {why}"
            )


def check_lookups(ctx: Context) -> None:
    """Check 6 for /v1/requests/{id}: the record's view agrees with the ledger."""
    for op in ctx.ops.values():
        if op.op != "lookup" or op.client_id is None:
            continue
        for attempt in op.attempts:
            if attempt["status"] != 200:
                continue
            ctx.stats["lookups_answered"] += 1
            view = response_of(attempt)
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


def check_kinds(ctx: Context) -> None:
    """Check 8: the kind a request is charged as follows the client's subscription.

    A client with no subscribe op in the history is charged ``standard``. A client whose
    subscribe op was answered 200 (the ledger committed it) is charged ``ai`` for every
    request the API stamped after that answer: such a request was appended after the
    subscription was decided, to the client's partition, so it is folded after it.
    Requests stamped before the 200, and clients whose every subscribe attempt failed
    (it may or may not be in the log), are not judged.
    """
    answered: dict[str, list[int]] = defaultdict(list)  # client -> its subscribe 200s
    for op in ctx.ops.values():
        if op.op == "subscribe" and op.client_id:
            answered[op.client_id] += [a["complete_ms"] for a in op.attempts if a["status"] == 200]
    for (client_id, request_id), request in sorted(ctx.fold.requests.items()):
        if not request.charges:
            continue
        kind = request.charges[0]["kind"]
        if kind == "ai" and any(d["kind"] == "standard" for d in request.deliveries):
            ctx.stats["ai_delivered_standard"] += 1  # the fallback check 2 accepts
        stamped = [
            e["occurred_at_ms"] for e in ctx.log.meme_requests.get((client_id, request_id), [])
        ]
        if client_id not in answered:
            expected = "standard"
        elif answered[client_id] and stamped and min(stamped) > min(answered[client_id]):
            expected = "ai"
        else:
            continue
        ctx.stats[f"charged_{kind}"] += 1
        if kind != expected:
            ctx.problems.add(
                "kind",
                f"client={client_id} request={request_id}: charged as {kind}, the client's "
                f"subscription says {expected}",
            )
