"""Billing scope: register clients, credit purchased tokens, switch Memes AI, replace
a client's API key, erase a client's personal data.

Every route here needs the billing team's token. Each one appends input events to
``<region>.purchases`` and answers with what the ledger decided.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Response, status
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.deps import (
    AiGate,
    BillingScope,
    Blobs,
    Bridge,
    IdPath,
    Keys,
    Settled,
    given_once,
    idempotency_key,
)
from api.errors import AlreadyRegistered, Conflict, DeadlineExceeded, InvalidParameter, NotFound
from api.keys import key_hash
from api.openapi import CALLS_LEDGER
from api.params import TYPED_TEXT_PATTERN, Timestamp, TokenCount, WholeNumber, typed_text
from core.blobstore import BlobStore
from core.clock import now_ms, to_ms
from core.ids import stable_id
from schemas.events import (
    MAX_OLD_KEY_VALID_MS,
    AccountOpened,
    ApiKeyRotated,
    ApiKeyRotationRequested,
    ClientRegistered,
    ErasureRequested,
    Id,
    PurchaseRejectReason,
    Reply,
    SubscriptionRequested,
    TokensCredited,
    TokensPurchased,
)

router = APIRouter(prefix="/v1/clients", tags=["billing"], dependencies=[BillingScope])

SAFE_TO_REPEAT = "not confirmed by the deadline; repeating the call is safe"


class Body(BaseModel):
    """A request body: a field it does not know is refused (422 naming it), not ignored.
    Billing sending ``{"days": 30}`` must learn that no such field exists, not get an
    open-ended subscription."""

    model_config = ConfigDict(extra="forbid")


class NewClient(Body):
    name: Annotated[str, AfterValidator(typed_text)] = Field(
        default="",
        max_length=200,
        description="A label for people",
        json_schema_extra={"pattern": TYPED_TEXT_PATTERN},
    )


class RegisteredClient(BaseModel):
    client_id: str
    api_key: str = Field(description="Shown once: only its sha256 is kept")
    pending: bool = Field(
        default=False,
        description="True if the ledger had not confirmed by the deadline; the "
        "registration is in the log and takes effect shortly",
    )


class KeyRotation(Body):
    old_key_valid_for_s: WholeNumber = Field(
        default=0,
        ge=0,
        le=MAX_OLD_KEY_VALID_MS // 1000,
        description="Seconds the replaced key keeps working beside the new one, for the "
        "client to deploy it (up to a week). 0, the default, for a leaked key: the replaced "
        "key, and any earlier one still in its grace, stops at once",
    )


class RotatedKey(RegisteredClient):
    old_key_valid_until: datetime | None = Field(
        default=None,
        description="Until when the replaced key works (the last to end, if keys replaced "
        "before are still in their grace); null: none works any more",
    )


class Purchase(Body):
    purchase_id: Id = Field(description="Billing's id; a repeat is credited once")
    tokens: TokenCount


class Credited(BaseModel):
    purchase_id: str
    tokens: int
    balance_after: int
    seq: int


class SubscriptionChange(Body):
    until: Timestamp | None = Field(
        default=None, description="ISO 8601 with a time zone, in the future; open-ended if absent"
    )


class Subscription(BaseModel):
    client_id: str
    ai_active: bool
    ai_until: datetime | None


RegistrationKey = Annotated[
    str | None,
    idempotency_key(
        "Billing's own id for this client (its customer id, say): the same key never opens "
        "a second account, so a registration can be retried safely"
    ),
]


def _new_api_key() -> str:
    return "mk_" + secrets.token_urlsafe(32)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=RegisteredClient,
    dependencies=[given_once(headers=("idempotency-key",))],
    summary="Register a client and issue its API key",
    responses={
        **CALLS_LEDGER,
        409: {
            "description": "`already_registered`: an account was opened under this "
            "Idempotency-Key (`client_id` names it); replace its key with POST "
            "/v1/clients/{client_id}/api-key"
        },
        202: {"description": "In the log, not confirmed by the deadline: `pending` is true"},
    },
)
async def register_client(
    bridge: Bridge,
    keys: Keys,
    response: Response,
    body: NewClient | None = None,
    idempotency_key: RegistrationKey = None,
) -> RegisteredClient:
    """Without an ``Idempotency-Key`` every call opens an account. With one, the key
    names the account (billing's customer id serves): a repeat opens nothing and is a
    409 ``already_registered`` naming the client, whose key can be replaced."""
    client_id = (
        uuid.uuid4().hex if idempotency_key is None else stable_id(f"client:{idempotency_key}")
    )
    api_key = _new_api_key()
    digest = key_hash(api_key)
    event = ClientRegistered(
        **bridge.envelope(client_id),
        api_key_sha256=digest,
        name=body.name if body else "",
    )
    reply = await bridge.call(bridge.topics.purchases, event)
    if reply is None:
        if idempotency_key is not None:
            # The account may have been opened before, with another key: this one
            # would never work.
            raise DeadlineExceeded(
                "not confirmed by the deadline; repeat the call with the same Idempotency-Key"
            )
        # A new id: the event opens the account once folded. Losing the key would orphan
        # it, so hand it out, marked pending, valid on this instance from now.
        keys.add(digest, client_id)
        response.status_code = status.HTTP_202_ACCEPTED
        return RegisteredClient(client_id=client_id, api_key=api_key, pending=True)
    _expect(reply, "registered")
    if not isinstance(reply.entry, AccountOpened):  # opened by an earlier call
        raise AlreadyRegistered(client_id)
    keys.add(digest, client_id)
    return RegisteredClient(client_id=client_id, api_key=api_key)


@router.post(
    "/{client_id}/api-key",
    status_code=status.HTTP_201_CREATED,
    response_model=RotatedKey,
    summary="Replace the client's API key; the old one stops now or after a grace",
    responses={
        **CALLS_LEDGER,
        404: {"description": "Unknown client"},
        504: {
            "description": "Not confirmed by the deadline: the old key or none may work; "
            "repeat the call for a key that does"
        },
    },
)
async def rotate_api_key(
    client_id: IdPath, bridge: Bridge, keys: Keys, body: KeyRotation | None = None
) -> RotatedKey:
    """A new key, shown once, for a key that leaked or is due. Without
    ``old_key_valid_for_s`` the old key is refused from the ledger's decision on: at once
    on the API process that answers, within milliseconds on the others. With it, the old
    key works beside the new one until then, so a running client switches keys without an
    outage. The balance, the subscription and the history stay; the ledger records an
    ``ApiKeyRotated`` entry (hashes, never a key). Each call issues another key, and the
    last one decided is the key; a repeat keeps the grace of the keys it replaces."""
    api_key = _new_api_key()
    digest = key_hash(api_key)
    event = ApiKeyRotationRequested(
        **bridge.envelope(client_id),
        api_key_sha256=digest,
        old_key_valid_ms=body.old_key_valid_for_s * 1000 if body else 0,
    )
    # Unlike a registration's, this key may never be decided (an unknown client): handing
    # it out unconfirmed could leave billing with a key that never works.
    reply = _decided_for_client(
        await bridge.call(bridge.topics.purchases, event),
        "key_rotated",
        unconfirmed="not confirmed by the deadline; repeat the call for a new key",
    )
    rotated = reply.entry
    assert isinstance(rotated, ApiKeyRotated)
    replaced = [(key.api_key_sha256, key.valid_until_ms) for key in rotated.replaced_keys]
    keys.add(digest, client_id, replaced)
    # As decided: a processor older than the grace ignores it, and keeps no key.
    ends_ms = max((until for _, until in replaced), default=None)
    ends = None if ends_ms is None else datetime.fromtimestamp(ends_ms / 1000, UTC)
    return RotatedKey(client_id=client_id, api_key=api_key, old_key_valid_until=ends)


@router.post(
    "/{client_id}/purchases",
    status_code=status.HTTP_201_CREATED,
    response_model=Credited,
    summary="Credit purchased tokens (idempotent by purchase_id)",
    responses={
        **CALLS_LEDGER,
        200: {"description": "A repeat of a purchase already credited: the first answer"},
        404: {"description": "Unknown client"},
        409: {"description": "Same purchase_id, different amount"},
    },
)
async def purchase_tokens(
    client_id: IdPath, body: Purchase, bridge: Bridge, response: Response
) -> Credited:
    event = TokensPurchased(
        **bridge.envelope(client_id),
        purchase_id=body.purchase_id,
        tokens=body.tokens,
    )
    reply = await bridge.call(bridge.topics.purchases, event)
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
    responses={**CALLS_LEDGER, 404: {"description": "Unknown client"}},
)
async def subscribe(
    client_id: IdPath, bridge: Bridge, ai_gate: AiGate, body: SubscriptionChange | None = None
) -> Subscription:
    until_ms = to_ms(body.until) if body and body.until else None
    if until_ms is not None and until_ms <= now_ms():
        # Switched on and already ended: most likely a wrong year, and answered as if it
        # had done something.
        raise InvalidParameter(
            "until", "must be in the future; to switch Memes AI off, DELETE the subscription"
        )
    return await _change_subscription(bridge, ai_gate, client_id, active=True, until_ms=until_ms)


@router.delete(
    "/{client_id}/subscription",
    response_model=Subscription,
    summary="Switch Memes AI off",
    responses={**CALLS_LEDGER, 404: {"description": "Unknown client"}},
)
async def unsubscribe(client_id: IdPath, bridge: Bridge, ai_gate: AiGate) -> Subscription:
    return await _change_subscription(bridge, ai_gate, client_id, active=False, until_ms=None)


async def _change_subscription(
    bridge: Bridge, ai_gate: AiGate, client_id: str, *, active: bool, until_ms: int | None
) -> Subscription:
    event = SubscriptionRequested(
        **bridge.envelope(client_id),
        active=active,
        until_ms=until_ms,
    )
    reply = _decided_for_client(
        await bridge.call(bridge.topics.purchases, event),
        "subscription",
        unconfirmed=SAFE_TO_REPEAT,
    )
    account = reply.account
    assert account is not None
    ai_gate.learn(client_id, "ai" if account.ai_active else "standard")
    ai_until = (
        datetime.fromtimestamp(account.ai_until_ms / 1000, tz=UTC)
        if account.ai_until_ms is not None
        else None
    )
    return Subscription(client_id=client_id, ai_active=account.ai_active, ai_until=ai_until)


class Erasure(BaseModel):
    client_id: str
    requests_seen: int = Field(description="The client's request records read")
    requests_erased: int = Field(description="Of those, the ones that still held a caption")
    images_deleted: int = Field(description="Meme images removed from the blob store")
    in_flight: int = Field(description="Requests still waiting for their meme")
    complete: bool = Field(
        description="False while requests are in flight: their memes are still to come, "
        "so repeat the call after Retry-After seconds"
    )


@router.delete(
    "/{client_id}/personal-data",
    response_model=Erasure,
    summary="Erase the client's personal request details (captions and meme images)",
    responses={
        **CALLS_LEDGER,
        202: {"description": "Erased so far; requests in flight: repeat after Retry-After"},
        404: {"description": "Unknown client"},
        504: {"description": "Not confirmed by the deadline; repeating the call is safe"},
    },
)
async def erase_personal_data(
    client_id: IdPath, bridge: Bridge, blobs: Blobs, settled: Settled, response: Response
) -> Erasure:
    """Balances, ledger entries and their hash chain stay as they are (see
    docs/data-retention.md). Idempotent: a repeat erases what is new and deletes again
    any image a failed call left behind."""
    settled.forget_client(client_id)
    result = Erasure(
        client_id=client_id,
        requests_seen=0,
        requests_erased=0,
        images_deleted=0,
        in_flight=0,
        complete=True,
    )
    after: str | None = ""
    while after is not None:
        event = ErasureRequested(
            **bridge.envelope(client_id),
            after_request_id=after,
        )
        reply = _decided_for_client(
            await bridge.call(bridge.topics.purchases, event), "erased", unconfirmed=SAFE_TO_REPEAT
        )
        batch = reply.erasure
        assert batch is not None
        deleted = await asyncio.to_thread(_delete_all, blobs, batch.image_keys)
        result.requests_seen += batch.requests_seen
        result.requests_erased += batch.requests_erased
        result.images_deleted += deleted
        result.in_flight += batch.in_flight
        after = batch.next_after_request_id
    if result.in_flight:
        settings = bridge.settings
        wait_s = math.ceil((settings.request_deadline_ms + settings.refund_grace_ms) / 1000)
        response.status_code = status.HTTP_202_ACCEPTED
        response.headers["Retry-After"] = str(wait_s)
        result.complete = False
    return result


def _delete_all(blobs: BlobStore, keys: tuple[str, ...]) -> int:
    return sum(blobs.delete(key) for key in keys)


def _decided_for_client(reply: Reply | None, outcome: str, *, unconfirmed: str) -> Reply:
    """The ledger's ``outcome`` of a change to a client: a 504 saying ``unconfirmed`` if
    no reply came by the deadline, a 404 if the ledger knows no such client."""
    if reply is None:
        raise DeadlineExceeded(unconfirmed)
    if reply.outcome == "not_found":
        raise NotFound("unknown client")
    _expect(reply, outcome)
    return reply


def _expect(reply: Reply, outcome: str) -> None:
    if reply.outcome != outcome:
        raise RuntimeError(f"expected outcome={outcome}, got {reply.outcome}")
