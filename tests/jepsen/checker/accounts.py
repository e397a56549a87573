"""The checks of accounts and writes: 4 (seq, chain, conservation, no overdraft; the
fold checked the seq and chain), 5 (nothing acknowledged is missing: registrations,
purchases and key rotations; nothing decided that was not sent) and 9 for purchases (one
refused before its append in every attempt was never appended)."""

from __future__ import annotations

import hashlib

from tests.jepsen.checker.context import Context
from tests.jepsen.checker.fold import VIEW_FIELDS
from tests.jepsen.checker.model import GENESIS_HASH, Json
from tests.jepsen.checker.ops import Logical, refused, response_of


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
                _check_me(ctx, op.client_id, response_of(attempt), attempt)
                latest = last_me.get(op.client_id)
                if latest is None or attempt["complete_ms"] >= latest["complete_ms"]:
                    last_me[op.client_id] = attempt
    for client_id, attempt in last_me.items():
        final = ctx.fold.accounts.get(client_id)
        if final and response_of(attempt).get("seq") != final.seq:
            ctx.stats["me_last_before_final_seq"] += 1  # e.g. a deadline refund came later


def _check_me(ctx: Context, client_id: str, view: Json, attempt: Json) -> None:
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
    expected = dict(zip(VIEW_FIELDS, folded, strict=True))
    # ai_active says whether Memes AI is served when the ledger read the account: at the
    # query's time, somewhere between the call and its answer.
    switched_on, until = expected.pop("ai_active"), expected["ai_until_ms"]
    served = {
        switched_on and (until is None or at < until)
        for at in (attempt["invoke_ms"], attempt["complete_ms"])
    }
    wrong = [
        f"{name}={view.get(name)} (ledger {value})"
        for name, value in expected.items()
        if view.get(name) != value
    ]
    if view.get("ai_active") not in served:
        wrong.append(f"ai_active={view.get('ai_active')} (ledger {sorted(served)})")
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
    # Per purchase id (billing may send one twice, as two ops): refused in every attempt.
    all_refused: dict[tuple[str, str], bool] = {}
    for op in ctx.ops.values():
        if op.op == "register":
            _check_register(ctx, op)
        elif op.op == "rotate":
            _check_rotate(ctx, op)
        elif op.op == "purchase":
            _check_purchase(ctx, op)
            key = (op.client_id or "", _purchase_id(op))
            all_refused[key] = all_refused.get(key, True) and all(map(refused, op.attempts))
    for (client_id, purchase_id), refused_only in sorted(all_refused.items()):
        if not refused_only:
            continue
        ctx.stats["purchases_refused"] += 1
        if ctx.log.purchased.get((client_id, purchase_id)):
            ctx.problems.add(
                "refused",
                f"client={client_id} purchase={purchase_id}: every attempt was refused before "
                "the append, yet a TokensPurchased is in the purchases topic",
            )
    for client_id in sorted(ctx.fold.accounts):
        sent = ctx.log.registered.get(client_id, [])
        opened = ctx.fold.accounts[client_id].opened_key_sha256
        if not any(e.get("api_key_sha256") == opened for e in sent):
            ctx.problems.add("missing", f"client={client_id}: AccountOpened, no ClientRegistered")
    for client_id, rotated in sorted(ctx.fold.rotations.items()):
        asked = {e["api_key_sha256"]: e for e in ctx.log.rotations.get(client_id, [])}
        current = ctx.fold.accounts[client_id].opened_key_sha256
        graced: dict[str, int] = {}
        for entry in rotated:
            ctx.stats["keys_rotated"] += 1
            request = asked.get(entry["api_key_sha256"])
            if request is None:
                ctx.problems.add(
                    "missing",
                    f"client={client_id} seq={entry['seq']}: ApiKeyRotated to a key no "
                    "ApiKeyRotationRequested asked for",
                )
                break
            graced = _graced_after(graced, current, request)
            kept = entry.get("replaced_keys", [])
            told = {k["api_key_sha256"]: k["valid_until_ms"] for k in kept}
            ctx.stats["keys_in_a_grace"] += len(told)
            if told != graced:
                ctx.problems.add(
                    "missing",
                    f"client={client_id} seq={entry['seq']}: ApiKeyRotated keeps {told} "
                    f"working, the rotation asked for {graced}",
                )
            current, graced = entry["api_key_sha256"], told
    for (client_id, purchase_id), credits in sorted(ctx.fold.credits.items()):
        ctx.stats["credits"] += len(credits)
        where = f"client={client_id} purchase={purchase_id}"
        if len(credits) > 1:
            ctx.problems.add("missing", f"{where}: credited {len(credits)} times")
        sent = ctx.log.purchased.get((client_id, purchase_id), [])
        if not any(e["tokens"] == credits[0]["tokens"] for e in sent):
            ctx.problems.add("missing", f"{where}: credited, no TokensPurchased of that amount")


MAX_REPLACED_KEYS = 4


def _graced_after(graced: dict[str, int], key: str, request: Json) -> dict[str, int]:
    """The replaced keys that work after a rotation of ``key`` asked by ``request`` (an
    ``ApiKeyRotationRequested``), given those that did before: ``key`` until the request's
    time plus its grace (or a later end it had already), the others until their own end;
    none without a grace; never the new key; at most the four that end last."""
    grace_ms = request.get("old_key_valid_ms", 0)
    if not grace_ms:
        return {}
    at_ms = request["occurred_at_ms"]
    after = {k: until for k, until in graced.items() if until > at_ms}
    after[key] = max(after.get(key, 0), at_ms + grace_ms)
    after.pop(request["api_key_sha256"], None)
    return dict(sorted(after.items(), key=lambda item: item[1])[-MAX_REPLACED_KEYS:])


def _check_register(ctx: Context, op: Logical) -> None:
    for attempt in op.attempts:
        if attempt["status"] == 409:  # already_registered: it names the account it found
            ctx.stats["registrations_repeated"] += 1
            client_id = response_of(attempt).get("client_id")
            if client_id not in ctx.fold.accounts:
                ctx.problems.add(
                    "missing", f"client={client_id}: told already registered, no account"
                )
            continue
        if attempt["status"] not in (201, 202):  # 202: appended, not confirmed yet
            continue
        ctx.stats["registrations_acknowledged"] += 1
        client_id = response_of(attempt).get("client_id")
        account = ctx.fold.accounts.get(client_id or "")
        api_key = response_of(attempt).get("api_key", "")
        if account is None:
            ctx.problems.add("missing", f"client={client_id}: told {attempt['status']}, no account")
        elif account.opened_key_sha256 != hashlib.sha256(api_key.encode()).hexdigest():
            ctx.problems.add("missing", f"client={client_id}: opened with another key's hash")


def _check_rotate(ctx: Context, op: Logical) -> None:
    """A confirmed rotation (201) is an ``ApiKeyRotated`` of the key it handed out."""
    rotated = {e["api_key_sha256"] for e in ctx.fold.rotations.get(op.client_id or "", [])}
    for attempt in op.attempts:
        if attempt["status"] != 201:
            continue
        ctx.stats["rotations_acknowledged"] += 1
        api_key = response_of(attempt).get("api_key", "")
        if hashlib.sha256(api_key.encode()).hexdigest() not in rotated:
            ctx.problems.add(
                "missing", f"client={op.client_id} logical={op.logical}: told 201, no ApiKeyRotated"
            )


def _purchase_id(op: Logical) -> str:
    purchase_id = (op.attempts[0].get("body") or {}).get("purchase_id")
    return purchase_id if isinstance(purchase_id, str) else ""


def _check_purchase(ctx: Context, op: Logical) -> None:
    ctx.stats["purchase_ops"] += 1
    purchase_id, tokens = _purchase_id(op), (op.attempts[0].get("body") or {}).get("tokens")
    credits = ctx.fold.credits.get((op.client_id or "", purchase_id), [])
    where = f"client={op.client_id} purchase={purchase_id}"
    for attempt in op.attempts:
        status, answer = attempt["status"], response_of(attempt)
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
