"""Auditor scope, read-only: a client's ledger and the reconciliation of all accounts.

Every route needs the auditor token (``MAAS_AUDITOR_TOKEN``) as a bearer token; the
billing token is not an auditor token, and the auditor token opens no billing route.
Nothing here appends to Kafka: the routes read the committed log (``api.ledger_reader``,
which says what that costs) and answer from it.
"""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from api import ledger_reader
from api.deps import AppSettings, AuditorScope, IdPath
from api.errors import InvalidParameter, NotFound
from api.params import Timestamp
from core.clock import to_ms
from ledger.reconcile import Reconciliation
from schemas.events import ENTRY_ADAPTER, LedgerEntryUnion, entry_hash

MAX_PAGE = 1000

EntryType = Literal[
    "AccountOpened",
    "TokensCredited",
    "TokensCharged",
    "MemeRejected",
    "MemeDelivered",
    "TokensRefunded",
    "SubscriptionChanged",
    "PersonalDataErased",
    "ApiKeyRotated",
]
CSV_COLUMNS = (
    "seq",
    "type",
    "occurred_at",
    "occurred_at_ms",
    "event_id",
    "tokens",
    "balance_after",
    "purchase_id",
    "request_id",
    "kind",
    "reason",
    "prev_hash",
    "hash",
)

router = APIRouter(tags=["audit"], dependencies=[AuditorScope])


class LedgerPage(BaseModel):
    client_id: str
    entries: list[LedgerEntryUnion]
    next_cursor: int | None = Field(
        description="Pass as `cursor` for the next page; null on the last page"
    )


def _csv(entries: list[LedgerEntryUnion]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        row: dict[str, Any] = ENTRY_ADAPTER.dump_python(entry, mode="json")
        row["occurred_at"] = datetime.fromtimestamp(entry.occurred_at_ms / 1000, UTC).isoformat()
        row["hash"] = entry_hash(entry)
        writer.writerow(["" if row.get(c) is None else row[c] for c in CSV_COLUMNS])
    return out.getvalue()


@router.get(
    "/v1/clients/{client_id}/ledger",
    response_model=LedgerPage,
    summary="One client's ledger entries, filtered and paginated (JSON or CSV)",
    responses={
        200: {"content": {"text/csv": {}}},
        404: {"description": "No ledger entries for this client"},
    },
)
async def get_client_ledger(
    settings: AppSettings,
    response: Response,
    client_id: IdPath,
    from_: Annotated[
        Timestamp | None,
        Query(alias="from", description="Entries at or after this time (ISO 8601, with zone)"),
    ] = None,
    to: Annotated[
        Timestamp | None, Query(description="Entries before this time (ISO 8601, with zone)")
    ] = None,
    type_: Annotated[
        list[EntryType] | None, Query(alias="type", description="Only these types; repeatable")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[int, Query(ge=0, description="The `next_cursor` of the last page")] = 0,
    format_: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
) -> Any:
    """Entries in seq order with ``seq > cursor``. The time filter uses
    ``occurred_at_ms``; ``next_cursor`` (also the ``X-Next-Cursor`` header) is the seq of
    the page's last entry when more entries match."""
    from_ms = None if from_ is None else to_ms(from_)
    before_ms = None if to is None else to_ms(to)
    if from_ms is not None and before_ms is not None and before_ms < from_ms:
        # An empty page would read as "nothing happened then".
        raise InvalidParameter("to", "must not be earlier than `from`")
    entries = await asyncio.to_thread(ledger_reader.client_ledger, settings, client_id)
    if not entries:
        raise NotFound("no ledger entries for this client")
    types = set(type_ or ())
    matching = [
        e
        for e in entries
        if e.seq > cursor
        and (not types or e.type in types)
        and (from_ms is None or e.occurred_at_ms >= from_ms)
        and (before_ms is None or e.occurred_at_ms < before_ms)
    ]
    page = matching[:limit]
    next_cursor = page[-1].seq if len(matching) > limit else None
    headers = {} if next_cursor is None else {"X-Next-Cursor": str(next_cursor)}
    if format_ == "csv":
        return Response(_csv(page), media_type="text/csv; charset=utf-8", headers=headers)
    response.headers.update(headers)
    return LedgerPage(client_id=client_id, entries=page, next_cursor=next_cursor)


@router.get(
    "/v1/audit/reconciliation",
    response_model=Reconciliation,
    summary="Per client and in total: credited - charged + refunded = balance, and ids",
)
async def get_reconciliation(settings: AppSettings) -> Reconciliation:
    """Folds the whole ledger and reads the purchases and requests topics (see
    ``api.ledger_reader`` for the cost)."""
    return await asyncio.to_thread(ledger_reader.reconciliation, settings)
