"""``core.ids`` is the contract of every derived id: it must stay uuid5 to the bit."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from core.ids import derived_id, stable_id


@given(st.text())
def test_stable_id_is_uuid5_of_the_prefixed_name(name: str) -> None:
    assert stable_id(name) == uuid.uuid5(uuid.NAMESPACE_URL, "maas:" + name).hex


def test_a_past_refund_keeps_its_id() -> None:
    # Written by the scheme before its fast path: past ids are part of the contract.
    assert derived_id("client-1", "req-9", "expired") == "a499cc03870b5099a6339faeabf8457c"
