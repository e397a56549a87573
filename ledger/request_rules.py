"""The rules of a meme request and of its one outcome (checks 1-5 of ``ledger.fold``)."""

from __future__ import annotations

from msgspec.structs import replace

from core.ids import derived_id
from ledger.decision import (
    NOTHING,
    Decision,
    Expire,
    Forget,
    Pricing,
    StateView,
    answer,
    append,
    append_at,
)
from ledger.state import MAX_WAITERS, Account, Forgotten, RequestRecord, Waiter
from schemas.events import (
    Kind,
    MemeApproved,
    MemeDelivered,
    MemeFailed,
    MemeGenerated,
    MemeRejected,
    MemeRequested,
    RefundReason,
    RejectReason,
    Reply,
    RequestQueried,
    TokensCharged,
    TokensRefunded,
)


def meme_requested(
    state: StateView, event: MemeRequested, pricing: Pricing, remember_ms: int
) -> Decision:
    account = state.account(event.client_id)
    if account is None:
        return answer(
            event.reply_to, event.event_id, "rejected", reason=RejectReason.UNKNOWN_CLIENT
        )

    seen = remembered_request(state, event, remember_ms)
    if seen is not None:
        return repeated_request(seen, event, account)

    kind: Kind = "ai" if account.ai_entitled(event.occurred_at_ms) else "standard"
    price = pricing.of(kind)
    if account.balance < price:
        rejected, account = append(
            account,
            MemeRejected,
            event,
            0,
            request_id=event.request_id,
            reason=RejectReason.INSUFFICIENT_TOKENS,
        )
        record = RequestRecord(
            request_id=event.request_id,
            client_id=event.client_id,
            fingerprint=event.fingerprint,
            status="rejected",
            deadline_ms=event.deadline_ms,
            reject_reason=RejectReason.INSUFFICIENT_TOKENS,
        )
        return answer(
            event.reply_to,
            event.event_id,
            "rejected",
            changes=Decision(entries=(rejected,), account=account, requests=(record,)),
            balance=account.balance,
            entry=rejected,
            reason=RejectReason.INSUFFICIENT_TOKENS,
        )

    charged, account = append(
        account,
        TokensCharged,
        event,
        -price,
        request_id=event.request_id,
        tokens=price,
        kind=kind,
    )
    record = RequestRecord(
        request_id=event.request_id,
        client_id=event.client_id,
        fingerprint=event.fingerprint,
        status="charged",
        kind=kind,
        tokens=price,
        deadline_ms=event.deadline_ms,
        waiters=(Waiter(reply_to=event.reply_to, correlation_id=event.event_id),),
    )
    approved = MemeApproved(
        event_id=derived_id(event.event_id, "approved"),
        client_id=event.client_id,
        region=event.region,
        occurred_at_ms=event.occurred_at_ms,
        causation_id=event.request_id,
        request_id=event.request_id,
        kind=kind,
        lat=event.lat,
        lon=event.lon,
        query=event.query,
        deadline_ms=event.deadline_ms,
        reply_to=event.reply_to,
        correlation_id=event.event_id,
        tokens=price,
        balance_after=account.balance,
    )
    return Decision(entries=(charged,), account=account, requests=(record,), approved=approved)


def remembered_request(
    state: StateView, asking: MemeRequested | RequestQueried, remember_ms: int
) -> RequestRecord | None:
    """The asked request's record as of the input's time: None once it is forgotten,
    whether or not the processor has dropped it yet, so that the decision does not
    depend on when that happened."""
    record = state.request(asking.client_id, asking.request_id)
    if record is None or record.forgotten_at(asking.occurred_at_ms, remember_ms):
        return None
    return record


def forget_ended(state: StateView, timer: Forget, remember_ms: int) -> Decision:
    """Drop the records of requests ended ``remember_ms`` before the timer's time. An
    index entry whose request id was used again since (a newer record, still open or
    ended at another deadline) goes alone: the newer record has its own entry."""
    forgotten: list[Forgotten] = []
    until_ms = timer.now_ms - remember_ms
    for client_id, request_id, deadline_ms in state.ended_by(timer.since_ms, until_ms):
        if len(forgotten) == timer.limit:
            break
        record = state.request(client_id, request_id)
        same = (
            record is not None
            and record.deadline_ms == deadline_ms
            and record.forgotten_at(timer.now_ms, remember_ms)
        )
        forgotten.append(Forgotten(client_id, request_id, deadline_ms, record=same))
    return Decision(forgotten=tuple(forgotten))


def repeated_request(seen: RequestRecord, event: MemeRequested, account: Account) -> Decision:
    if seen.fingerprint != event.fingerprint:
        return answer(
            event.reply_to, event.event_id, "rejected", reason=RejectReason.IDEMPOTENCY_CONFLICT
        )
    if seen.status == "charged":
        # A redelivered input (same event id) is already waiting. Beyond MAX_WAITERS a
        # retry is told at once that the request is still in progress (its API answers
        # 409 with Retry-After), instead of waiting out its deadline unanswered.
        if any(w.correlation_id == event.event_id for w in seen.waiters):
            return NOTHING
        if len(seen.waiters) >= MAX_WAITERS:
            return answer(event.reply_to, event.event_id, "in_progress")
        waiter = Waiter(reply_to=event.reply_to, correlation_id=event.event_id)
        return Decision(requests=(replace(seen, waiters=(*seen.waiters, waiter)),))
    return Decision(
        replies=((event.reply_to, _final_reply(seen, event.event_id, account.balance)),)
    )


def _final_reply(record: RequestRecord, correlation_id: str, balance: int) -> Reply:
    match record.status:
        case "delivered":
            return Reply(
                correlation_id=correlation_id,
                outcome="delivered",
                balance=balance,
                entry=record.meme,
                caption=record.caption,
                tokens_charged=record.tokens,
            )
        case "refunded":
            return Reply(
                correlation_id=correlation_id,
                outcome="refunded",
                balance=balance,
                reason=record.refund_reason,
            )
        case _:
            return Reply(
                correlation_id=correlation_id,
                outcome="rejected",
                balance=balance,
                reason=record.reject_reason,
            )


def meme_generated(state: StateView, event: MemeGenerated) -> Decision:
    record, account = open_request(state, event.client_id, event.request_id)
    if record is None or account is None:
        return NOTHING
    if event.occurred_at_ms > record.deadline_ms:
        # Judged by event time, so that the decision is the same whenever the outcome is
        # folded: a meme made after the deadline is not delivered, and the charge is
        # refunded now, as the deadline's timer would have (same entry id).
        return deadline_refund(state, event, event.occurred_at_ms)
    delivered, account = append(
        account,
        MemeDelivered,
        event,
        0,
        request_id=event.request_id,
        meme_id=event.meme_id,
        kind=event.kind,
        template=event.template,
        image_key=event.image_key,
    )
    ended = replace(record, status="delivered", meme=delivered, caption=event.caption, waiters=())
    # The waiter its generator answered itself has its meme already (outcome "made").
    replies = tuple(
        (
            w.reply_to,
            Reply(
                correlation_id=w.correlation_id,
                outcome="delivered",
                balance=account.balance,
                entry=delivered,
                caption=event.caption,
                tokens_charged=record.tokens,
            ),
        )
        for w in record.waiters
        if w.correlation_id != event.replied_to
    )
    return Decision(entries=(delivered,), account=account, requests=(ended,), replies=replies)


def meme_failed(state: StateView, event: MemeFailed) -> Decision:
    """A generator's failure refunds the charge. Judged by event time, as a meme is: a
    failure after the deadline (the pool never got to the work in time) is the deadline's
    refund, so that its client hears "no meme in time" (504), not "generator failed"."""
    record = state.request(event.client_id, event.request_id)
    if record is not None and event.occurred_at_ms > record.deadline_ms:
        return deadline_refund(state, event, event.occurred_at_ms)
    return end_with_refund(
        state, event, RefundReason.GENERATOR_FAILED, event.event_id, event.occurred_at_ms
    )


def deadline_refund(
    state: StateView, cause: MemeGenerated | MemeFailed | Expire, at_ms: int
) -> Decision:
    """The refund of a request whose deadline has passed: by its timer, or by an outcome
    that came too late. One entry id for all, so whichever comes first is the one refund."""
    return end_with_refund(
        state,
        cause,
        RefundReason.DEADLINE_EXPIRED,
        derived_id(cause.client_id, cause.request_id, "expired"),
        at_ms,
    )


def end_with_refund(
    state: StateView,
    cause: MemeFailed | MemeGenerated | Expire,
    reason: RefundReason,
    cause_id: str,
    now_ms: int,
) -> Decision:
    record, account = open_request(state, cause.client_id, cause.request_id)
    if record is None or account is None:
        return NOTHING
    if isinstance(cause, Expire) and cause.now_ms < record.deadline_ms:
        return NOTHING  # an early timer: the outcome may still come
    refunded, account = append_at(
        account,
        TokensRefunded,
        cause_id,
        cause.request_id,
        cause.region,
        now_ms,
        record.tokens,
        request_id=cause.request_id,
        tokens=record.tokens,
        reason=reason,
    )
    ended = replace(record, status="refunded", refund_reason=reason, waiters=())
    replies = tuple(
        (
            w.reply_to,
            Reply(
                correlation_id=w.correlation_id,
                outcome="refunded",
                balance=account.balance,
                entry=refunded,
                reason=reason,
            ),
        )
        for w in record.waiters
    )
    return Decision(entries=(refunded,), account=account, requests=(ended,), replies=replies)


def open_request(
    state: StateView, client_id: str, request_id: str
) -> tuple[RequestRecord | None, Account | None]:
    """The request if it is charged and still waiting for its one outcome."""
    record = state.request(client_id, request_id)
    if record is None or record.status != "charged":
        return None, None
    return record, state.account(client_id)
