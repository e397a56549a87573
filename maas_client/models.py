"""What the service answers, as frozen dataclasses built from its JSON.

Field names are the JSON's. Token amounts are integers and are checked to be: a body
with a float, a string or a missing field raises ``TypeError`` or ``KeyError``, which
the clients turn into ``MaasError`` with error ``unexpected_response``. Unknown fields
are ignored, so a newer service that adds one does not break an older client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Json = Mapping[str, Any]


@dataclass(frozen=True)
class Meme:
    request_id: str
    meme_id: str
    caption: str | None  # None when repeating a request whose personal data was erased
    template: str
    kind: str  # "standard" or "ai"
    image_url: str  # a path on the service: /v1/images/<sha256>.png
    tokens_charged: int
    balance_after: int

    @classmethod
    def from_json(cls, body: Json) -> Meme:
        return cls(
            request_id=_str(body, "request_id"),
            meme_id=_str(body, "meme_id"),
            caption=_opt_str(body, "caption"),
            template=_str(body, "template"),
            kind=_str(body, "kind"),
            image_url=_str(body, "image_url"),
            tokens_charged=_int(body, "tokens_charged"),
            balance_after=_int(body, "balance_after"),
        )


@dataclass(frozen=True)
class Account:
    client_id: str
    balance: int
    seq: int  # of the client's last ledger entry
    memes_requested: int
    memes_delivered: int
    tokens_credited: int
    tokens_charged: int
    tokens_refunded: int
    ai_active: bool
    ai_until_ms: int | None  # Unix milliseconds; None: open-ended or off

    @classmethod
    def from_json(cls, body: Json) -> Account:
        return cls(
            client_id=_str(body, "client_id"),
            balance=_int(body, "balance"),
            seq=_int(body, "seq"),
            memes_requested=_int(body, "memes_requested"),
            memes_delivered=_int(body, "memes_delivered"),
            tokens_credited=_int(body, "tokens_credited"),
            tokens_charged=_int(body, "tokens_charged"),
            tokens_refunded=_int(body, "tokens_refunded"),
            ai_active=_bool(body, "ai_active"),
            ai_until_ms=_opt_int(body, "ai_until_ms"),
        )


@dataclass(frozen=True)
class RequestStatus:
    """The outcome of one meme request; the meme's fields are None until delivered."""

    request_id: str
    status: str  # "charged", "delivered", "refunded" or "rejected"
    kind: str | None
    reject_reason: int | None  # the ledger's numbered reason
    refund_reason: int | None
    caption: str | None  # None once the client's personal data was erased
    meme_id: str | None
    template: str | None
    image_url: str | None

    @classmethod
    def from_json(cls, body: Json) -> RequestStatus:
        meme = body.get("meme")
        if meme is not None and not isinstance(meme, Mapping):
            raise TypeError("meme: expected an object")
        image_key = _str(meme, "image_key") if meme else None
        return cls(
            request_id=_str(body, "request_id"),
            status=_str(body, "status"),
            kind=_opt_str(body, "kind"),
            reject_reason=_opt_int(body, "reject_reason"),
            refund_reason=_opt_int(body, "refund_reason"),
            caption=_opt_str(body, "caption"),
            meme_id=_str(meme, "meme_id") if meme else None,
            template=_str(meme, "template") if meme else None,
            image_url=f"/v1/images/{image_key}" if image_key else None,
        )


@dataclass(frozen=True)
class RegisteredClient:
    client_id: str
    # Shown once by the service; kept out of repr so that logging the result does not
    # leak it.
    api_key: str = field(repr=False)
    # True when the ledger had not confirmed by the deadline: the registration is in
    # the log and takes effect shortly.
    pending: bool = False

    @classmethod
    def from_json(cls, body: Json) -> RegisteredClient:
        return cls(
            client_id=_str(body, "client_id"),
            api_key=_str(body, "api_key"),
            pending=_bool(body, "pending") if "pending" in body else False,
        )


@dataclass(frozen=True)
class RotatedKey(RegisteredClient):
    # Until when the replaced key still works (time-zone aware; the last to end, if keys
    # replaced before are still in their grace); None: none works any more.
    old_key_valid_until: datetime | None = None

    @classmethod
    def from_json(cls, body: Json) -> RotatedKey:
        registered = RegisteredClient.from_json(body)  # the fields it shares, read alike
        return cls(**vars(registered), old_key_valid_until=_opt_time(body, "old_key_valid_until"))


@dataclass(frozen=True)
class Credited:
    purchase_id: str
    tokens: int
    balance_after: int
    seq: int
    # True when this purchase_id had been credited before: nothing changed this time.
    repeat: bool = False

    @classmethod
    def from_json(cls, body: Json, *, repeat: bool) -> Credited:
        return cls(
            purchase_id=_str(body, "purchase_id"),
            tokens=_int(body, "tokens"),
            balance_after=_int(body, "balance_after"),
            seq=_int(body, "seq"),
            repeat=repeat,
        )


@dataclass(frozen=True)
class Subscription:
    client_id: str
    ai_active: bool
    ai_until: datetime | None  # time-zone aware; None: open-ended or off

    @classmethod
    def from_json(cls, body: Json) -> Subscription:
        return cls(
            client_id=_str(body, "client_id"),
            ai_active=_bool(body, "ai_active"),
            ai_until=_opt_time(body, "ai_until"),
        )


def _str(body: Json, name: str) -> str:
    value = body[name]
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a string, got {type(value).__name__}")
    return value


def _opt_str(body: Json, name: str) -> str | None:
    return None if body.get(name) is None else _str(body, name)


def _opt_time(body: Json, name: str) -> datetime | None:
    text = _opt_str(body, name)
    return None if text is None else datetime.fromisoformat(text)


def _int(body: Json, name: str) -> int:
    value = body[name]
    # bool is an int in Python; a float would truncate silently. Neither is a count.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    return value


def _opt_int(body: Json, name: str) -> int | None:
    return None if body.get(name) is None else _int(body, name)


def _bool(body: Json, name: str) -> bool:
    value = body[name]
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a boolean, got {type(value).__name__}")
    return value
