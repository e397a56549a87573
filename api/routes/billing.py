"""Billing scope: register clients, credit purchased tokens, switch Memes AI.

Every route here needs the billing team's token. Each one appends one input event to
``<region>.purchases`` and answers with what the ledger decided.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field

from api.deps import BillingScope, Bridge, Keys
from api.errors import Conflict, DeadlineExceeded, NotFound
from api.keys import key_hash
from schemas.events import (
    MAX_PURCHASE_TOKENS,
    ClientRegistered,
    Id,
    PurchaseRejectReason,
    Reply,
    SubscriptionRequested,
    TokensCredited,
    TokensPurchased,
)

router = APIRouter(prefix="/v1/clients", tags=["billing"], dependencies=[BillingScope])

ClientPath = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]


class NewClient(BaseModel):
    name: str = Field(default="", max_length=200, description="A label for people")


class RegisteredClient(BaseModel):
    client_id: str
    api_key: str = Field(description="Shown once: only its sha256 is kept")
    pending: bool = Field(
        default=False,
        description="True if the ledger had not confirmed by the deadline; the "
        "registration is in the log and takes effect shortly",
    )


class Purchase(BaseModel):
    purchase_id: Id = Field(description="Billing's id; a repeat is credited once")
    # strict: a JSON integer only, never "5" or 5.0 (no float touches a balance)
    tokens: int = Field(ge=1, le=MAX_PURCHASE_TOKENS, strict=True)


class Credited(BaseModel):
    purchase_id: str
    tokens: int
    balance_after: int
    seq: int


def _iso_text_only(value: object) -> object:
    # Pydantic would read a JSON number as Unix seconds: "until": 12 is a mistake, not 1970.
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 datetime string with a time zone")
    return value


class SubscriptionChange(BaseModel):
    until: Annotated[AwareDatetime, BeforeValidator(_iso_text_only)] | None = Field(
        default=None, description="ISO 8601 with a time zone; open-ended if absent"
    )


class Subscription(BaseModel):
    client_id: str
    ai_active: bool
    ai_until: datetime | None


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=RegisteredClient,
    summary="Register a client and issue its API key",
)
async def register_client(
    bridge: Bridge, keys: Keys, response: Response, body: NewClient | None = None
) -> RegisteredClient:
    client_id = uuid.uuid4().hex
    api_key = "mk_" + secrets.token_urlsafe(32)
    digest = key_hash(api_key)
    event = ClientRegistered(
        **bridge.envelope(client_id),
        api_key_sha256=digest,
        name=body.name if body else "",
        reply_to=bridge.settings.api_instance,
    )
    reply = await bridge.call(bridge.topics.purchases, event, bridge.deadline_ms())
    # The event is in the log either way: the key is valid now on this instance, and
    # once the ledger has folded it, on every instance.
    keys.add(digest, client_id)
    if reply is None:
        # Losing the key would orphan the account: hand it out, marked pending.
        response.status_code = status.HTTP_202_ACCEPTED
        return RegisteredClient(client_id=client_id, api_key=api_key, pending=True)
    _expect(reply, "registered")
    return RegisteredClient(client_id=client_id, api_key=api_key)


@router.post(
    "/{client_id}/purchases",
    status_code=status.HTTP_201_CREATED,
    response_model=Credited,
    summary="Credit purchased tokens (idempotent by purchase_id)",
    responses={
        200: {"description": "A repeat of a purchase already credited: the first answer"},
        404: {"description": "Unknown client"},
        409: {"description": "Same purchase_id, different amount"},
    },
)
async def purchase_tokens(
    client_id: ClientPath, body: Purchase, bridge: Bridge, response: Response
) -> Credited:
    event = TokensPurchased(
        **bridge.envelope(client_id),
        purchase_id=body.purchase_id,
        tokens=body.tokens,
        reply_to=bridge.settings.api_instance,
    )
    reply = await bridge.call(bridge.topics.purchases, event, bridge.deadline_ms())
    if reply is None:
        raise DeadlineExceeded(
            "not confirmed by the deadline; repeat the same purchase to learn the outcome",
            purchase_id=body.purchase_id,
        )
    if reply.outcome == "purchase_rejected":
        if reply.reason == PurchaseRejectReason.PURCHASE_CONFLICT:
            raise Conflict("purchase_id was credited before with another amount")
        raise NotFound("unknown client")
    _expect(reply, "credited")
    credited = reply.entry
    assert isinstance(credited, TokensCredited)
    # An entry caused by an earlier input means this purchase was credited before and
    # this call changed nothing: same body, 200 instead of 201.
    if credited.causation_id != event.event_id:
        response.status_code = status.HTTP_200_OK
    return Credited(
        purchase_id=credited.purchase_id,
        tokens=credited.tokens,
        balance_after=credited.balance_after,
        seq=credited.seq,
    )


@router.put(
    "/{client_id}/subscription",
    response_model=Subscription,
    summary="Switch Memes AI on, optionally until a time",
    responses={404: {"description": "Unknown client"}},
)
async def subscribe(
    client_id: ClientPath, bridge: Bridge, body: SubscriptionChange | None = None
) -> Subscription:
    until = body.until if body else None
    until_ms = int(until.timestamp() * 1000) if until else None
    return await _change_subscription(bridge, client_id, active=True, until_ms=until_ms)


@router.delete(
    "/{client_id}/subscription",
    response_model=Subscription,
    summary="Switch Memes AI off",
    responses={404: {"description": "Unknown client"}},
)
async def unsubscribe(client_id: ClientPath, bridge: Bridge) -> Subscription:
    return await _change_subscription(bridge, client_id, active=False, until_ms=None)


async def _change_subscription(
    bridge: Bridge, client_id: str, *, active: bool, until_ms: int | None
) -> Subscription:
    event = SubscriptionRequested(
        **bridge.envelope(client_id),
        active=active,
        until_ms=until_ms,
        reply_to=bridge.settings.api_instance,
    )
    reply = await bridge.call(bridge.topics.purchases, event, bridge.deadline_ms())
    if reply is None:
        raise DeadlineExceeded("not confirmed by the deadline; repeating the call is safe")
    if reply.outcome == "not_found":
        raise NotFound("unknown client")
    _expect(reply, "subscription")
    account = reply.account
    assert account is not None
    ai_until = (
        datetime.fromtimestamp(account.ai_until_ms / 1000, tz=UTC)
        if account.ai_until_ms is not None
        else None
    )
    return Subscription(client_id=client_id, ai_active=account.ai_active, ai_until=ai_until)


def _expect(reply: Reply, outcome: str) -> None:
    if reply.outcome != outcome:
        raise RuntimeError(f"expected outcome={outcome}, got {reply.outcome}")
