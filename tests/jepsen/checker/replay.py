"""Check 7, replay equals live: our fold of the ledger from offset 0 against the live
state in the changelog (accounts, request records, the pending and ended indexes,
purchases)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Set

from tests.jepsen.checker.context import Context
from tests.jepsen.checker.fold import VIEW_FIELDS, Request
from tests.jepsen.checker.model import Json

Key = tuple[str, ...]
Live = dict[Key, Json]


def check_replay(ctx: Context) -> None:
    """Our fold of the ledger from offset 0 against the live state in the changelog."""
    live: dict[str, Live] = defaultdict(dict)
    pending: dict[Key, str] = {}
    ended: dict[Key, str] = {}
    for key, value in ctx.log.changelog.items():
        prefix, _, rest = key.partition("/")
        parts = tuple(rest.split("/", 2 if prefix == "d" else 1))
        if prefix == "d" and len(parts) == 3:
            ended[parts[1:]] = parts[0]  # the deadline, 16 digits, in the key
        elif prefix not in ("a", "r", "q", "p") or len(parts) != (1 if prefix == "a" else 2):
            ctx.stats["changelog_other_keys"] += 1
        elif prefix == "q":
            pending[parts] = value.decode(errors="replace")  # the deadline's digits
        else:
            live[prefix][parts] = _live_json(ctx, key, value)
    ctx.stats["changelog_live_keys"] = len(ctx.log.changelog)
    _replay_accounts(ctx, live["a"])
    _replay_requests(ctx, live["r"])
    requests = ctx.fold.requests.items()
    open_now = {k for k, r in requests if r.status == "charged"}
    ended_now = {k for k, r in requests if r.status not in (None, "charged")}
    # A run is shorter than the day the ledger remembers an ended request at least: none
    # is forgotten, so the ended index holds every one.
    _replay_index(ctx, "pending", pending, open_now, live["r"])
    _replay_index(ctx, "ended index", ended, ended_now, live["r"])
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


def _replay_index(
    ctx: Context, name: str, live: dict[Key, str], holds: Set[Key], records: Live
) -> None:
    """The index ``name`` holds exactly the requests ``holds``, each under its record's
    deadline (``live``: the deadline's digits as the index writes them)."""
    for key in sorted(set(live) | holds):
        what = f"{name} client={key[0]} request={key[1]}"
        if key not in live or key not in holds:
            state = "no entry" if key not in live else "an entry"
            ctx.problems.add("replay", f"{what}: {state}, replay says {ctx.request(*key).outcome}")
            continue
        deadline = records.get(key, {}).get("deadline_ms")
        if not live[key].isdigit() or int(live[key]) != deadline:
            ctx.problems.add("replay", f"{what}: deadline {live[key]!r} not the record's")


def _replay_purchases(ctx: Context, live: Live) -> None:
    for key in sorted(set(live) | set(ctx.fold.credits)):
        credits = ctx.fold.credits.get((key[0], key[1]))
        expected = None
        if credits:
            expected = {"tokens": credits[0]["tokens"], "credited": credits[0]}
        _compare(ctx, f"purchase client={key[0]} purchase={key[1]}", live.get(key), expected)
