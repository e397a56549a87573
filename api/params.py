"""Value types of request parameters and bodies that more than one route takes.

Each is as strict as its OpenAPI schema says, no more and no less, so a generated
client and the server agree on what is valid:

- ``Timestamp``: an ISO 8601 date-time with a time zone, from 1970 to 9999 in UTC (the
  ledger keeps Unix milliseconds, and answers them back as date-times). Pydantic alone
  would also read a number, or a numeric string in a query, as Unix seconds: ``?to=0.5``
  is a mistake, not 1970.
- ``typed_text``: text a person typed (a meme's query, a client's name): no control
  character, and no U+FFFD, which is what an invalid UTF-8 byte of a query string
  decodes to, so a client's broken encoding is refused rather than charged for a meme
  of ``��``. ``TYPED_TEXT_PATTERN`` says the same in the schema.
- ``WholeNumber``: JSON Schema's ``integer`` includes ``5.0``, so an integral number is
  taken as the integer it is; ``"5"``, ``true`` and ``5.5`` are refused.
  ``TokenCount`` is one from 1 up: no float ever reaches a balance.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, WithJsonSchema

from core.clock import EPOCH
from schemas.events import MAX_PURCHASE_TOKENS


def _iso_8601_text(value: object) -> object:
    if not isinstance(value, str) or _is_number(value):
        raise ValueError("expected an ISO 8601 date-time with a time zone")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# The last time a Python datetime holds, in UTC: a later one (9999-12-31T23:00:00-05:00)
# could be kept, but never answered back as a date-time.
LAST = datetime.max.replace(tzinfo=UTC)


def _in_range(value: datetime) -> datetime:
    if value < EPOCH:
        raise ValueError("must be 1970-01-01T00:00:00Z or later")
    if value > LAST:
        raise ValueError("must be 9999-12-31T23:59:59Z or earlier")
    return value


_UNTYPED = r"\x00-\x1f\x7f-\x9f\ufffd"  # C0 and C1 controls, the replacement character
_UNTYPED_CHAR = re.compile(f"[{_UNTYPED}]")
TYPED_TEXT_PATTERN = f"^[^{_UNTYPED}]*$"


def typed_text(value: str) -> str:
    found = _UNTYPED_CHAR.search(value)
    if found is None:
        return value
    if found.group() == "\ufffd":
        raise ValueError("not valid UTF-8: percent-encode the text's UTF-8 bytes")
    raise ValueError(f"control character U+{ord(found.group()):04X} is not allowed")


def _whole_number(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected a whole number")
    return value


Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_iso_8601_text),
    AfterValidator(_in_range),
    # What the validators say, for the schema: a year from 1970 to 9999.
    WithJsonSchema(
        {"type": "string", "format": "date-time", "pattern": r"^(19[7-9][0-9]|[2-9][0-9]{3})-"}
    ),
]
WholeNumber = Annotated[int, Field(strict=True), BeforeValidator(_whole_number)]
TokenCount = Annotated[
    int, Field(ge=1, le=MAX_PURCHASE_TOKENS, strict=True), BeforeValidator(_whole_number)
]
