"""The records the ledger keeps, one key each, and how they are named in a store.

A client's balance and its Memes AI subscription live in **one** record (``Account``),
so the entitlement check on the hot path costs no extra read. Every purchase id has its
own record, kept without expiry; every request id has one too, kept until the fold's
``remember_ms`` (the personal-data retention) after the request's deadline once the
request has ended (``RequestRecord.forgotten_at``): that is the deduplication of
retries and the answer to "what happened to request X". An index of ended requests by
deadline (``ended_key``) lets the processor drop the records past it in key order.

The records are msgspec Structs, not pydantic models: the fold reads and writes two or
three of them per decision, and pydantic's validation, copies and JSON were most of the
fold's time. Their JSON is the same bytes as before (the ledger entries nested in a
record are still pydantic models and keep their own serializer), so a store or
changelog written by an older version reads the same. Structs are validated when they
are decoded, not when the fold builds them: the fold's own values are typed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from pydantic import BaseModel

from schemas.events import (
    GENESIS_HASH,
    AccountView,
    Kind,
    MemeDelivered,
    RefundReason,
    RejectReason,
    RequestView,
    TokensCredited,
    dump,
)

STATE_FORMAT_VERSION = 2
RequestStatus = Literal["charged", "delivered", "refunded", "rejected"]
MAX_WAITERS = 8  # concurrent retries of one request that all get the answer


class Record(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A stored record: immutable; a change is ``msgspec.structs.replace``."""


class Account(Record, frozen=True):
    client_id: str
    api_key_sha256: str
    balance: int = 0
    seq: int = 0
    memes_requested: int = 0
    memes_delivered: int = 0
    tokens_credited: int = 0
    tokens_charged: int = 0
    tokens_refunded: int = 0
    ai_active: bool = False
    ai_until_ms: int | None = None
    last_hash: str = GENESIS_HASH  # entry_hash of the last entry: the next one's prev_hash
    # (api_key_sha256, valid_until_ms) of each replaced key in a grace, as the last
    # ApiKeyRotated wrote them (the API's key table reads them from that entry). UNSET, and
    # not written, when there are none: the account's bytes stay what they were, and a
    # processor older than the field still reads it.
    replaced_keys: tuple[tuple[str, int], ...] | msgspec.UnsetType = msgspec.UNSET

    def ai_entitled(self, now_ms: int) -> bool:
        return self.ai_active and (self.ai_until_ms is None or now_ms < self.ai_until_ms)

    def view(self, now_ms: int) -> AccountView:
        """The account as a client reads it at ``now_ms`` (the asking event's time): Memes
        AI counts as active only while it is served, not once its ``ai_until_ms`` passed."""
        return AccountView(
            client_id=self.client_id,
            balance=self.balance,
            seq=self.seq,
            memes_requested=self.memes_requested,
            memes_delivered=self.memes_delivered,
            tokens_credited=self.tokens_credited,
            tokens_charged=self.tokens_charged,
            tokens_refunded=self.tokens_refunded,
            ai_active=self.ai_entitled(now_ms),
            ai_until_ms=self.ai_until_ms,
        )


class Waiter(Record, frozen=True):
    """An API instance waiting for a request's final outcome."""

    reply_to: int
    correlation_id: str


class RequestRecord(Record, frozen=True):
    request_id: str
    client_id: str
    fingerprint: str
    status: RequestStatus
    kind: Kind | None = None
    # Tokens charged, what a refund gives back. Records written before the price was a
    # parameter of the fold have none: they were all charged 1 token.
    tokens: int = 1
    deadline_ms: int = 0
    waiters: tuple[Waiter, ...] = ()
    reject_reason: RejectReason | None = None
    refund_reason: RefundReason | None = None
    meme: MemeDelivered | None = None
    # The delivered meme's caption: personal data, so here and not in the ledger entry;
    # None once erased.
    caption: str | None = None

    def forgotten_at(self, at_ms: int, remember_ms: int) -> bool:
        """Whether the request id is free again at ``at_ms``: the request ended, and its
        deadline is ``remember_ms`` past. A record without a deadline (a rejection
        recorded before rejections kept theirs) is never forgotten."""
        return self.status != "charged" and 0 < self.deadline_ms <= at_ms - remember_ms

    def view(self) -> RequestView:
        return RequestView(
            request_id=self.request_id,
            status=self.status,
            kind=self.kind,
            reject_reason=self.reject_reason,
            refund_reason=self.refund_reason,
            meme=self.meme,
            caption=self.caption,
        )


class PurchaseRecord(Record, frozen=True):
    purchase_id: str
    client_id: str
    tokens: int
    credited: TokensCredited


def _encode_entry(obj: Any) -> Any:
    """A ledger entry nested in a record: its own JSON, as pydantic writes it."""
    if isinstance(obj, BaseModel):
        return msgspec.Raw(dump(obj))
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def _decode_entry(kind: type, obj: Any) -> Any:
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return kind.model_validate(obj)
    raise NotImplementedError(f"cannot decode {kind}")


_encoder = msgspec.json.Encoder(enc_hook=_encode_entry)
_accounts = msgspec.json.Decoder(Account, dec_hook=_decode_entry)
_requests = msgspec.json.Decoder(RequestRecord, dec_hook=_decode_entry)
_purchases = msgspec.json.Decoder(PurchaseRecord, dec_hook=_decode_entry)


def encode_record(record: Record) -> bytes:
    return _encoder.encode(record)


def decode_account(raw: bytes) -> Account:
    return _accounts.decode(raw)


def decode_request(raw: bytes) -> RequestRecord:
    return _requests.decode(raw)


def decode_purchase(raw: bytes) -> PurchaseRecord:
    return _purchases.decode(raw)


# Store keys. One prefix per record type; prefixes never change meaning.
def account_key(client_id: str) -> bytes:
    return b"a/" + client_id.encode()


def request_key(client_id: str, request_id: str) -> bytes:
    # Request ids are per client, like purchase ids: one client's key never blocks another's.
    return b"r/" + client_id.encode() + b"/" + request_id.encode()


PENDING_PREFIX = b"q/"


def pending_key(client_id: str, request_id: str) -> bytes:
    """Index of charged requests still waiting for an outcome; value = deadline_ms."""
    return PENDING_PREFIX + client_id.encode() + b"/" + request_id.encode()


def parse_pending(key: bytes, value: bytes) -> tuple[str, str, int]:
    """(client_id, request_id, deadline_ms) of a pending-index record."""
    client_id, request_id = key[len(PENDING_PREFIX) :].decode().split("/", 1)
    return client_id, request_id, int(value)


ENDED_PREFIX = b"d/"


def ended_key(client_id: str, request_id: str, deadline_ms: int) -> bytes:
    """Index of ended requests by deadline, the order in which they are forgotten; the
    value is empty."""
    return b"%s/%s/%s" % (_ended_from(deadline_ms), client_id.encode(), request_id.encode())


def _ended_from(deadline_ms: int) -> bytes:
    """Where the ended-index's keys of ``deadline_ms`` begin: fixed-width digits, so that
    key order is deadline order."""
    return b"%s%016d" % (ENDED_PREFIX, deadline_ms)


def parse_ended(key: bytes) -> tuple[str, str, int]:
    """(client_id, request_id, deadline_ms) of an ended-index key."""
    deadline, client_id, request_id = key[len(ENDED_PREFIX) :].decode().split("/", 2)
    return client_id, request_id, int(deadline)


@dataclass(frozen=True, slots=True)
class Forgotten:
    """An ended-index entry whose time has come: it goes, and so does its request record
    (``record``) unless the request id was used again since (its record is a newer one)."""

    client_id: str
    request_id: str
    deadline_ms: int
    record: bool


def purchase_key(client_id: str, purchase_id: str) -> bytes:
    # Purchase ids are unique per client: billing's ids are not global across partitions.
    return b"p/" + client_id.encode() + b"/" + purchase_id.encode()


Scan = Callable[[bytes], Iterator[tuple[bytes, bytes]]]


def scan_dict(records: dict[bytes, bytes]) -> Scan:
    """``Scan`` over a dict: sorts on every call, fine for tests and small replays."""

    def scan(start: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key in sorted(k for k in records if k >= start):
            yield key, records[key]

    return scan


class KeyValueState:
    """``StateView`` over any byte store: a dict in tests and replay, RocksDB live.

    ``get`` reads one key; ``scan(start)`` yields (key, value) in key order from
    ``start`` on (the caller stops reading where its prefix ends).
    """

    __slots__ = ("_get", "_scan")

    def __init__(self, get: Callable[[bytes], bytes | None], scan: Scan) -> None:
        self._get = get
        self._scan = scan

    def account(self, client_id: str) -> Account | None:
        raw = self._get(account_key(client_id))
        return None if raw is None else decode_account(raw)

    def request(self, client_id: str, request_id: str) -> RequestRecord | None:
        raw = self._get(request_key(client_id, request_id))
        return None if raw is None else decode_request(raw)

    def purchase(self, client_id: str, purchase_id: str) -> PurchaseRecord | None:
        raw = self._get(purchase_key(client_id, purchase_id))
        return None if raw is None else decode_purchase(raw)

    def ended_by(self, since_ms: int, until_ms: int) -> Iterator[tuple[str, str, int]]:
        """(client_id, request_id, deadline_ms) of the ended-index with a deadline from
        ``since_ms`` to ``until_ms``, earliest first."""
        for key, _ in self._scan(_ended_from(since_ms)):
            if not key.startswith(ENDED_PREFIX):
                return
            ended = parse_ended(key)
            if ended[2] > until_ms:
                return
            yield ended

    def requests_of(self, client_id: str, after_request_id: str = "") -> Iterator[RequestRecord]:
        """The client's request records in request-id order, after ``after_request_id``."""
        prefix = request_key(client_id, "")
        # Ids never hold a NUL byte, so key + NUL is the first key after it.
        start = request_key(client_id, after_request_id) + b"\0" if after_request_id else prefix
        for key, raw in self._scan(start):
            if not key.startswith(prefix):
                return
            yield decode_request(raw)


def record_writes(
    account: Account | None,
    requests: tuple[RequestRecord, ...],
    purchase: PurchaseRecord | None,
    forgotten: tuple[Forgotten, ...] = (),
) -> list[tuple[bytes, bytes | None]]:
    """The (key, value) pairs that persist a decision's records; None deletes a key."""
    writes: list[tuple[bytes, bytes | None]] = []
    if account is not None:
        writes.append((account_key(account.client_id), encode_record(account)))
    for request in requests:
        key = request_key(request.client_id, request.request_id)
        writes.append((key, encode_record(request)))
        pending = pending_key(request.client_id, request.request_id)
        if request.status == "charged":
            writes.append((pending, str(request.deadline_ms).encode()))
        elif request.status in ("delivered", "refunded"):
            # Only these end a charged request; a rejected one was never pending.
            writes.append((pending, None))
        if request.status != "charged" and request.deadline_ms > 0:
            ended = ended_key(request.client_id, request.request_id, request.deadline_ms)
            writes.append((ended, b""))
    for gone in forgotten:
        writes.append((ended_key(gone.client_id, gone.request_id, gone.deadline_ms), None))
        if gone.record:
            writes.append((request_key(gone.client_id, gone.request_id), None))
    if purchase is not None:
        key = purchase_key(purchase.client_id, purchase.purchase_id)
        writes.append((key, encode_record(purchase)))
    return writes
