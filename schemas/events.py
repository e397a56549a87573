"""Event contracts: every message on a Kafka topic of the service is one of these.

Three families, one envelope (``event_id``, ``type``, ``schema_version``, ``client_id``,
``region``, ``occurred_at_ms``, ``causation_id``):

- **Inputs** appended by the API and the generator pools; the ledger processor folds them:
  ``ClientRegistered``, ``TokensPurchased``, ``SubscriptionRequested``, ``MemeRequested``,
  ``MemeGenerated``, ``MemeFailed``, ``ErasureRequested``, and the read-only
  ``AccountQueried`` / ``RequestQueried``.
- **Ledger entries** written by the ledger processor only, to ``<region>.ledger``, kept
  forever. Each carries the client's ``seq`` (1, 2, 3, ... with no gap) and the
  ``balance_after`` it. Their fold rebuilds every balance.
- **Work and replies**: ``MemeApproved`` for a generator pool, ``Reply`` for the API
  instance that waits.

Token amounts are integers. Times are integer milliseconds since the Unix epoch, so the
fold never parses a date. A change to a model must stay backward compatible with every
version published in ``schemas/published/`` (checked by ``tests/unit/test_schemas.py``).
"""

from __future__ import annotations

import hashlib
from enum import IntEnum
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

MAX_QUERY_CHARS = 200
MAX_PURCHASE_TOKENS = 1_000_000_000

ID_PATTERN = r"^[A-Za-z0-9._:-]+$"
ID_MAX_CHARS = 128
Id = Annotated[str, Field(min_length=1, max_length=ID_MAX_CHARS, pattern=ID_PATTERN)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]  # an API key's, an entry's
Kind = Literal["standard", "ai"]
KINDS: tuple[Kind, ...] = get_args(Kind)


class RejectReason(IntEnum):
    """Why a meme request was rejected, in the order the ledger checks.

    Numbers are part of the contract: never reuse or renumber one.
    """

    UNKNOWN_CLIENT = 1
    IDEMPOTENCY_CONFLICT = 2  # same request id, different parameters
    INSUFFICIENT_TOKENS = 3


class PurchaseRejectReason(IntEnum):
    """Why a purchase was not credited, in the order the ledger checks."""

    UNKNOWN_CLIENT = 1
    PURCHASE_CONFLICT = 2  # same purchase id, different amount


class RefundReason(IntEnum):
    GENERATOR_FAILED = 1
    DEADLINE_EXPIRED = 2


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: Id
    schema_version: int = 1
    client_id: Id
    region: str
    occurred_at_ms: int = Field(ge=0)
    causation_id: Id | None = None


# --- inputs -------------------------------------------------------------------------


class Input(Envelope):
    """An input the ledger processor folds: unknown fields are ignored, not refused.

    During a rolling deploy a newer API or generator may add an optional field; an older
    processor must still decide the purchase or request, not dead-letter it. A change an
    older reader must not ignore is a new event ``type`` instead, which that reader
    cannot parse and dead-letters (``docs/architecture.md``). Ledger entries stay strict:
    their hash covers every field, so a reader that dropped one could not verify it.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")


class ClientRegistered(Input):
    type: Literal["ClientRegistered"] = "ClientRegistered"
    api_key_sha256: Sha256Hex
    name: str = Field(default="", max_length=200)
    reply_to: int = Field(ge=0)


class TokensPurchased(Input):
    type: Literal["TokensPurchased"] = "TokensPurchased"
    purchase_id: Id
    tokens: int = Field(ge=1, le=MAX_PURCHASE_TOKENS)
    reply_to: int = Field(ge=0)


class SubscriptionRequested(Input):
    """Billing switches Memes AI on (``active``, optionally until a time) or off."""

    type: Literal["SubscriptionRequested"] = "SubscriptionRequested"
    active: bool
    until_ms: int | None = Field(default=None, ge=0)
    reply_to: int = Field(ge=0)


class MemeRequested(Input):
    type: Literal["MemeRequested"] = "MemeRequested"
    request_id: Id
    fingerprint: str = Field(pattern=r"^[0-9a-f]{16,64}$")  # hash of lat, lon, query
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    deadline_ms: int = Field(ge=0)
    reply_to: int = Field(ge=0)  # partition of <region>.replies the API instance reads


class MemeGenerated(Input):
    schema_version: int = 2  # v2: replied_to
    type: Literal["MemeGenerated"] = "MemeGenerated"
    request_id: Id
    meme_id: str
    kind: Kind
    template: str
    caption: str
    image_key: str
    # The correlation id the generator answered itself (a meme made by the deadline, v2):
    # the ledger does not answer that waiter again. None: the ledger answers every waiter.
    replied_to: Id | None = None


class MemeFailed(Input):
    type: Literal["MemeFailed"] = "MemeFailed"
    request_id: Id
    kind: Kind
    error: str = Field(max_length=500)


class ErasureRequested(Input):
    """Billing asks to erase a client's personal request details (``docs/data-retention.md``).

    One batch of the client's request records, in request-id order after
    ``after_request_id``; the reply says whether more follow.
    """

    type: Literal["ErasureRequested"] = "ErasureRequested"
    after_request_id: str = Field(default="", max_length=128)
    reply_to: int = Field(ge=0)


MAX_OLD_KEY_VALID_MS = 7 * 86_400_000  # a week: time to deploy a new key, not a second key


class ApiKeyRotationRequested(Input):
    """Billing replaces a client's API key. The replaced key keeps working for
    ``old_key_valid_ms`` after the request (time for the client to deploy the new one); 0,
    for a leaked key, ends it and every other replaced key at once. A processor older than
    v2 ignores the field and ends the old key at once: the stricter reading."""

    schema_version: int = 2  # v2: old_key_valid_ms
    type: Literal["ApiKeyRotationRequested"] = "ApiKeyRotationRequested"
    api_key_sha256: Sha256Hex
    old_key_valid_ms: int = Field(default=0, ge=0, le=MAX_OLD_KEY_VALID_MS)
    reply_to: int = Field(ge=0)


class AccountQueried(Input):
    type: Literal["AccountQueried"] = "AccountQueried"
    reply_to: int = Field(ge=0)


class RequestQueried(Input):
    type: Literal["RequestQueried"] = "RequestQueried"
    request_id: Id
    reply_to: int = Field(ge=0)


# --- ledger entries -----------------------------------------------------------------


GENESIS_HASH = "0" * 64


class LedgerEntry(Envelope):
    schema_version: int = 2  # v2: prev_hash
    seq: int = Field(ge=1)
    balance_after: int = Field(ge=0)
    # sha256 of the client's previous entry (``entry_hash``), GENESIS_HASH for the first:
    # the per-client hash chain that makes a gap, a reordering or an edit visible.
    prev_hash: Sha256Hex = GENESIS_HASH


def entry_hash(entry: LedgerEntry) -> str:
    """The hash the client's next entry carries as ``prev_hash``: sha256 of its JSON."""
    return hashlib.sha256(dump(entry)).hexdigest()


class AccountOpened(LedgerEntry):
    type: Literal["AccountOpened"] = "AccountOpened"
    api_key_sha256: str


class TokensCredited(LedgerEntry):
    type: Literal["TokensCredited"] = "TokensCredited"
    purchase_id: Id
    tokens: int = Field(ge=1)


class TokensCharged(LedgerEntry):
    type: Literal["TokensCharged"] = "TokensCharged"
    request_id: Id
    tokens: int = Field(ge=1)
    kind: Kind


class MemeRejected(LedgerEntry):
    type: Literal["MemeRejected"] = "MemeRejected"
    request_id: Id
    reason: RejectReason


class MemeDelivered(LedgerEntry):
    """v1 carried the caption; from v2 the ledger, kept forever, holds no personal
    request detail: the caption is in the reply and the request record, which erasure
    rewrites. Old entries keep theirs (their hash covers it)."""

    type: Literal["MemeDelivered"] = "MemeDelivered"
    request_id: Id
    meme_id: str
    kind: Kind
    template: str
    caption: str | None = None
    image_key: str


class TokensRefunded(LedgerEntry):
    type: Literal["TokensRefunded"] = "TokensRefunded"
    request_id: Id
    tokens: int = Field(ge=1)
    reason: RefundReason


class SubscriptionChanged(LedgerEntry):
    type: Literal["SubscriptionChanged"] = "SubscriptionChanged"
    active: bool
    until_ms: int | None = None


class PersonalDataErased(LedgerEntry):
    """Balance-neutral: the captions of ``requests_erased`` request records (ids
    ``first_request_id`` to ``last_request_id``) were erased. Keeps the chain going and
    makes the erasure itself auditable."""

    schema_version: int = 1
    type: Literal["PersonalDataErased"] = "PersonalDataErased"
    requests_erased: int = Field(ge=1)
    first_request_id: Id
    last_request_id: Id


class ReplacedKey(BaseModel):
    """A replaced API key that still works until ``valid_until_ms`` (exclusive)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key_sha256: Sha256Hex
    valid_until_ms: int = Field(ge=0)


class ApiKeyRotated(LedgerEntry):
    """Balance-neutral: from this entry on, the client's key is the one ``api_key_sha256``
    hashes, and the replaced keys that still work are ``replaced_keys`` (each until its
    time); any other is refused. Only hashes are ever written. An entry without replaced
    keys writes no such field, so a v1 entry's bytes, and its hash, stay what they were."""

    schema_version: int = 2  # v2: replaced_keys
    type: Literal["ApiKeyRotated"] = "ApiKeyRotated"
    api_key_sha256: Sha256Hex
    replaced_keys: tuple[ReplacedKey, ...] = Field(default=(), exclude_if=lambda keys: not keys)


# --- work and replies ---------------------------------------------------------------


class MemeApproved(Envelope):
    """Charged work for a generator pool; the generator answers on the outcomes topic.

    From v2 it also names the API waiting for the meme (``reply_to``, ``correlation_id``)
    and what the charge left (``tokens``, ``balance_after``): a generator that makes the
    meme by its deadline answers that API itself, and the ledger settles the delivery
    after, off the client's path (``docs/architecture.md``)."""

    schema_version: int = 2  # v2: reply_to, correlation_id, tokens, balance_after
    type: Literal["MemeApproved"] = "MemeApproved"
    request_id: Id
    kind: Kind
    lat: float
    lon: float
    query: str
    deadline_ms: int
    reply_to: int | None = Field(default=None, ge=0)
    correlation_id: Id | None = None
    tokens: int | None = Field(default=None, ge=0)
    balance_after: int | None = Field(default=None, ge=0)


ReplyOutcome = Literal[
    "delivered",  # meme made; `entry` is the MemeDelivered
    "made",  # meme made by the deadline, told by its generator; `made` is the MemeGenerated (v4)
    "in_progress",  # a retry of a charged request the ledger cannot also wait on (v3)
    "rejected",  # `entry` is the MemeRejected (or a reason-only rejection, see `reason`)
    "refunded",  # `entry` is the TokensRefunded
    "credited",  # `entry` is the TokensCredited (also for a repeated purchase id)
    "purchase_rejected",
    "registered",
    "key_rotated",  # `entry` is the ApiKeyRotated
    "subscription",
    "account",
    "request",
    "erased",  # `erasure` says what one batch erased
    "not_found",
]


class AccountView(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id: str
    balance: int
    seq: int
    memes_requested: int
    memes_delivered: int
    tokens_credited: int
    tokens_charged: int
    tokens_refunded: int
    ai_active: bool = Field(
        description="Memes AI is served at the time of the read: switched on, and its "
        "ai_until_ms (if any) not yet passed"
    )
    ai_until_ms: int | None


class RequestView(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    status: Literal["charged", "delivered", "refunded", "rejected"]
    kind: Kind | None
    reject_reason: RejectReason | None = None
    refund_reason: RefundReason | None = None
    meme: MemeDelivered | None = None
    caption: str | None = None  # None once erased


class ErasureView(BaseModel):
    """What one ``ErasureRequested`` batch did."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests_seen: int
    requests_erased: int  # records that still had a caption
    image_keys: tuple[str, ...]  # images of every delivered request seen, to delete
    in_flight: int  # charged requests still waiting for their outcome
    next_after_request_id: str | None  # None: this was the last batch


class Reply(BaseModel):
    """The answer an API instance waits for, routed by ``reply_to`` partition."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = 4  # v2: caption, erasure; v3: tokens_charged, in_progress; v4: made
    correlation_id: str  # event_id of the input that the API appended
    outcome: ReplyOutcome
    balance: int | None = None
    entry: LedgerEntryUnion | None = None
    reason: int | None = None
    account: AccountView | None = None
    request: RequestView | None = None
    caption: str | None = None  # of a delivered meme
    # What the fold charged for a delivered meme (absent before v3, and on other outcomes).
    tokens_charged: int | None = None
    erasure: ErasureView | None = None
    made: MemeGenerated | None = None  # of outcome "made"; `balance` is after the charge

    @property
    def meme_kind(self) -> Kind | None:
        """The kind of the meme this reply carries, if it carries one."""
        if self.outcome == "made" and self.made is not None:
            return self.made.kind
        if self.outcome == "delivered" and isinstance(self.entry, MemeDelivered):
            return self.entry.kind
        return None


InputEvent = Annotated[
    ClientRegistered
    | TokensPurchased
    | SubscriptionRequested
    | MemeRequested
    | MemeGenerated
    | MemeFailed
    | ErasureRequested
    | ApiKeyRotationRequested
    | AccountQueried
    | RequestQueried,
    Field(discriminator="type"),
]
LedgerEntryUnion = Annotated[
    AccountOpened
    | TokensCredited
    | TokensCharged
    | MemeRejected
    | MemeDelivered
    | TokensRefunded
    | SubscriptionChanged
    | PersonalDataErased
    | ApiKeyRotated,
    Field(discriminator="type"),
]
Reply.model_rebuild()
RequestView.model_rebuild()

INPUT_ADAPTER: TypeAdapter[InputEvent] = TypeAdapter(InputEvent)
ENTRY_ADAPTER: TypeAdapter[LedgerEntryUnion] = TypeAdapter(LedgerEntryUnion)


def parse_input(raw: bytes) -> InputEvent:
    return INPUT_ADAPTER.validate_json(raw)


def parse_entry(raw: bytes) -> LedgerEntryUnion:
    return ENTRY_ADAPTER.validate_json(raw)


def dump(model: BaseModel) -> bytes:
    return model.__pydantic_serializer__.to_json(model)
