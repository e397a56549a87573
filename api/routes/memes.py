"""``GET /memes``: one token, one meme."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, BeforeValidator, Field

from api.deps import AiGate, Bridge, ClientId, IdempotencyKey, Settled, given_once
from api.errors import (
    Conflict,
    DeadlineExceeded,
    GenerationFailed,
    InsufficientTokens,
    KafkaUnavailable,
    NotReady,
    RequestInProgress,
    Unauthorized,
)
from api.openapi import CALLS_LEDGER
from api.policy import ScreenedQuery
from core.clock import now_ms
from core.ids import stable_id
from ledger.fold import LIST_PRICE
from schemas.events import (
    Kind,
    MemeDelivered,
    MemeGenerated,
    MemeRequested,
    RefundReason,
    RejectReason,
    Reply,
)

router = APIRouter(tags=["memes"])

SETTLE_SLACK_MS = 500  # the refund timer's own lag and the reply's hops

POLL_HINT = "poll GET /v1/requests/{request_id}; the token is refunded if no meme was made"


class Meme(BaseModel):
    request_id: str
    meme_id: str
    caption: str | None = Field(
        description="Null when answering a repeat after the client's personal data was erased"
    )
    template: str
    kind: Kind
    image_url: str
    tokens_charged: int
    balance_after: int


# A decimal number as JSON and generated clients write it. Python's float() also reads
# "1_0" and " 10 " as 10, and "nan" as a number (told "should be less than or equal to
# 90"): a typing mistake, not a place.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _decimal_text(value: object) -> object:
    if isinstance(value, str) and _DECIMAL.fullmatch(value) is None:
        raise ValueError("expected a finite decimal number such as 51.5, -0.12 or 1e-05")
    return value


Degrees = Annotated[float, BeforeValidator(_decimal_text)]


def request_id_for(client_id: str, idempotency_key: str | None) -> str:
    """Derived from the key, so a retry names the same request; random without one."""
    if idempotency_key is None:
        return uuid.uuid4().hex
    return stable_id(f"{client_id}:{idempotency_key}")


def fingerprint(lat: float, lon: float, query: str) -> str:
    """What "the same parameters" means for an idempotent retry."""
    return hashlib.sha256(f"{lat!r}|{lon!r}|{query}".encode()).hexdigest()[:32]


@router.get(
    "/memes",
    response_model=Meme,
    dependencies=[given_once("lat", "lon", "query", headers=("idempotency-key",))],
    summary="Get a meme (costs one token)",
    responses={
        402: {"description": "Not enough tokens; the body carries the balance"},
        409: {
            "description": "Idempotency-Key reused with other parameters (`conflict`); or a "
            "retry of a request still in progress (`request_in_progress`, with Retry-After)"
        },
        429: CALLS_LEDGER[429],
        502: {"description": "The generator failed; the token was refunded"},
        503: {
            "description": "Not confirmed in the log; it may still be recorded: retry with the "
            "same Idempotency-Key, or look up `request_id`. Or `overloaded`: refused before "
            "anything was recorded; retry after Retry-After"
        },
        504: {
            "description": "The ledger did not answer by the deadline plus the refund grace; "
            "poll /v1/requests/{id}, or retry with the same Idempotency-Key"
        },
    },
)
async def get_meme(
    client_id: ClientId,
    bridge: Bridge,
    settled: Settled,
    ai_gate: AiGate,
    lat: Annotated[Degrees, Query(ge=-90, le=90, description="Latitude in degrees")],
    lon: Annotated[Degrees, Query(ge=-180, le=180, description="Longitude in degrees")],
    query: ScreenedQuery,
    idempotency_key: IdempotencyKey = None,
) -> Meme:
    """Charges one token and returns a meme: an AI meme for clients subscribed to
    Memes AI, a standard one otherwise. The token is refunded if no meme is made."""
    request_id = request_id_for(client_id, idempotency_key)
    parameters = fingerprint(lat, lon, query)
    if idempotency_key is not None and (known := settled.get(request_id, now_ms())):
        # A retry of a request this instance answered: the ledger would say the same.
        if known.fingerprint != parameters:
            raise _key_reused(request_id)
        return answer(request_id, known.reply)
    deadline_ms = bridge.deadline_ms()
    event = MemeRequested(
        **bridge.envelope(client_id),
        request_id=request_id,
        fingerprint=parameters,
        lat=lat,
        lon=lon,
        query=query,
        deadline_ms=deadline_ms,
    )
    # The answer comes by the deadline plus the refund grace: from the generator when it
    # made the meme in time (the ledger delivers exactly such a meme, judged by its event
    # time, unless a refund came first: then it was free), else the ledger's own word (a
    # rejection, or the deadline's refund). A 504 means neither came, and says where to look.
    settled_by_ms = deadline_ms + bridge.settings.refund_grace_ms + SETTLE_SLACK_MS
    try:
        with ai_gate.admit(client_id):
            reply = await bridge.call(bridge.topics.requests, event, settled_by_ms)
    except (KafkaUnavailable, NotReady) as exc:
        # The append may still have reached the log (a timed-out produce is ambiguous):
        # name the request, so that it can be looked up or retried under its key.
        exc.fields["request_id"] = request_id
        raise
    if reply is not None and reply.meme_kind is not None:
        ai_gate.learn(client_id, reply.meme_kind)
    if reply is not None and idempotency_key is not None:
        # Only a keyed request can be retried as the same request; without a key every
        # call is a new one, and keeping its answer would only feed the collector.
        settled.put(request_id, client_id, parameters, reply, now_ms())
    return answer(request_id, reply)


def tokens_charged(reply: Reply, meme: MemeDelivered) -> int:
    """The price the fold charged for this meme, from its reply. A reply written before
    schema v3 (an older processor, during an upgrade) does not carry it; such a processor
    charged the list price."""
    if reply.tokens_charged is not None:
        return reply.tokens_charged
    return LIST_PRICE.of(meme.kind)


def _meme(
    request_id: str,
    meme: MemeDelivered | MemeGenerated,
    caption: str | None,
    tokens: int,
    balance_after: int,
) -> Meme:
    return Meme(
        request_id=request_id,
        meme_id=meme.meme_id,
        caption=caption,
        template=meme.template,
        kind=meme.kind,
        image_url=f"/v1/images/{meme.image_key}",
        tokens_charged=tokens,
        balance_after=balance_after,
    )


def _key_reused(request_id: str) -> Conflict:
    return Conflict("Idempotency-Key was used before with other parameters", request_id=request_id)


def answer(request_id: str, reply: Reply | None) -> Meme:
    """The outcome as the client sees it: the generator's or the ledger's word."""
    if reply is None:
        raise DeadlineExceeded(POLL_HINT.format(request_id=request_id), request_id=request_id)
    match reply.outcome, reply.reason:
        case "delivered", _ if isinstance(reply.entry, MemeDelivered):
            meme = reply.entry
            balance = reply.balance if reply.balance is not None else meme.balance_after
            return _meme(request_id, meme, reply.caption, tokens_charged(reply, meme), balance)
        case "made", _ if reply.made is not None:
            if reply.balance is None or reply.tokens_charged is None:
                raise RuntimeError("a made reply without balance or tokens_charged")
            made = reply.made
            return _meme(request_id, made, made.caption, reply.tokens_charged, reply.balance)
        case "rejected", RejectReason.INSUFFICIENT_TOKENS:
            raise InsufficientTokens(balance=reply.balance)
        case "rejected", RejectReason.UNKNOWN_CLIENT:
            raise Unauthorized("the ledger does not know this client")
        case "rejected", RejectReason.IDEMPOTENCY_CONFLICT:
            raise _key_reused(request_id)
        case "in_progress", _:
            raise RequestInProgress(
                "this request is still being made; retry with the same Idempotency-Key",
                request_id=request_id,
            )
        case "refunded", RefundReason.GENERATOR_FAILED:
            raise GenerationFailed(request_id=request_id, refunded=True)
        case "refunded", _:
            raise DeadlineExceeded(
                "no meme was made in time; the token was refunded",
                request_id=request_id,
                refunded=True,
            )
    raise RuntimeError(f"unexpected reply outcome={reply.outcome} reason={reply.reason}")
