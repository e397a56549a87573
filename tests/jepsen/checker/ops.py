"""The history, indexed: its attempts grouped into logical operations, and what each
attempt was told."""

from __future__ import annotations

from dataclasses import dataclass

from tests.jepsen.checker.model import QUERY_PREFIX, Json, Problems, stable_request_id


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
        named = op_key(op) or query_of(op.attempts[0]) == QUERY_PREFIX + op.logical
        if op.op == "meme" and not named:
            problems.add(
                "history",
                f"logical={op.logical}: neither one Idempotency-Key on every attempt "
                f"nor the query '{QUERY_PREFIX}<logical>' names it in the ledger",
            )
    return ops


def op_key(op: Logical) -> str | None:
    """The Idempotency-Key every attempt of ``op`` carried, if they all carried one."""
    keys = {attempt["idempotency_key"] for attempt in op.attempts}
    key = keys.pop() if len(keys) == 1 else None
    return key if isinstance(key, str) and key else None


def index_keyed(ops: dict[str, Logical]) -> dict[tuple[str, str], Logical]:
    """Meme ops by the (client, request id) their Idempotency-Key gives every attempt:
    how the ledger names an op whose query is not ``QUERY_PREFIX + logical``."""
    keyed = {}
    for op in ops.values():
        key = op_key(op)
        if op.op == "meme" and key and op.client_id:
            keyed[op.client_id, stable_request_id(op.client_id, key)] = op
    return keyed


def query_of(attempt: Json) -> str | None:
    params = attempt.get("params") or {}
    query = params.get("query")
    return query if isinstance(query, str) else None


# Answers the API gives before it appends anything (api/bridge.py ``call``, api/shedding.py,
# api/ai_admission.py): (status, error code).
REFUSED = frozenset({(503, "overloaded"), (503, "not_ready"), (429, "too_many_requests")})


def refused(attempt: Json) -> bool:
    """The attempt was refused before the API appended anything."""
    return (attempt["status"], response_of(attempt).get("error")) in REFUSED


def response_of(attempt: Json) -> Json:
    response = attempt.get("response")
    return response if isinstance(response, dict) else {}


def told(attempt: Json) -> str:
    """What an attempt was told, as a short code: "200", "409_conflict", "none", ..."""
    status = attempt["status"]
    if status is None:
        return "none"
    error = response_of(attempt).get("error")
    if status == 409:
        return "409_in_progress" if error == "request_in_progress" else "409_conflict"
    if status == 504 and response_of(attempt).get("refunded"):
        return "504_refunded"
    return str(status)
