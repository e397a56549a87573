"""Client scope: the caller's own account and the fate of its requests."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Bridge, ClientId, IdPath
from api.errors import DeadlineExceeded, NotFound
from api.openapi import CALLS_LEDGER
from ledger.decision import DAY_MS
from schemas.events import AccountQueried, AccountView, RequestQueried, RequestView

router = APIRouter(prefix="/v1", tags=["account"])


@router.get(
    "/me",
    response_model=AccountView,
    summary="Balance, usage and Memes AI subscription of the caller",
    responses=CALLS_LEDGER,
)
async def get_me(client_id: ClientId, bridge: Bridge) -> AccountView:
    """Read from the ledger itself (in order after the caller's earlier requests),
    so a balance read right after a meme already reflects its charge."""
    event = AccountQueried(**bridge.envelope(client_id))
    reply = await bridge.call(bridge.topics.requests, event)
    if reply is None:
        raise DeadlineExceeded("the ledger did not answer in time; retry")
    if reply.outcome != "account" or reply.account is None:
        raise NotFound("no account for this key")
    return reply.account


@router.get(
    "/requests/{request_id}",
    response_model=RequestView,
    summary="What happened to one of the caller's meme requests",
    description=(
        "The ledger's record of the request: `charged` while its meme is being made, and"
        " for a moment after a meme was answered (the ledger records the delivery just"
        " after its generator answers), then `delivered`, `refunded` or `rejected`. An"
        " ended request is remembered `MAAS_PERSONAL_DATA_RETENTION_MS` (7 days) after its"
        " deadline; after that it is not found, and a request under its id is a new one."
    ),
    responses={
        **CALLS_LEDGER,
        404: {"description": "No such request for this client, or no longer remembered"},
    },
)
async def get_request(
    client_id: ClientId,
    bridge: Bridge,
    request_id: IdPath,
) -> RequestView:
    event = RequestQueried(
        **bridge.envelope(client_id),
        request_id=request_id,
    )
    reply = await bridge.call(bridge.topics.requests, event)
    if reply is None:
        raise DeadlineExceeded("the ledger did not answer in time; retry")
    if reply.outcome != "request" or reply.request is None:
        days = bridge.settings.personal_data_retention_ms / DAY_MS
        raise NotFound(
            "no such request for this client (an ended request is remembered "
            f"{days:g} days after its deadline)",
            request_id=request_id,
        )
    return reply.request
