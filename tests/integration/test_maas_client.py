"""The published client against a real region: every call goes through ``maas_client``
to the running service, and every claim about money is checked with ``me()``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from core.clock import to_ms
from maas_client import (
    AlreadyRegistered,
    BillingClient,
    Conflict,
    GenerationFailed,
    InsufficientTokens,
    InvalidRequest,
    MemesClient,
    NotFound,
    Unauthorized,
)
from tests.stack import FAULT_QUERY, Stack

pytestmark = [pytest.mark.kafka, pytest.mark.shared_region]

NEW_YORK = (40.730610, -73.935242)


@pytest.fixture
def billing(stack: Stack) -> Iterator[BillingClient]:
    with BillingClient(stack.base_url, stack.billing_token) as client:
        yield client


def new_client(stack: Stack, billing: BillingClient, tokens: int) -> tuple[str, MemesClient]:
    registered = billing.register("client test")
    assert not registered.pending
    if tokens:
        billing.purchase(registered.client_id, tokens, purchase_id=uuid.uuid4().hex)
    return registered.client_id, MemesClient(stack.base_url, registered.api_key)


def test_register_purchase_and_a_meme_for_one_token(stack: Stack, billing: BillingClient) -> None:
    registered = billing.register("demo")
    assert registered.api_key.startswith("mk_")

    credited = billing.purchase(registered.client_id, 3, purchase_id="order-1")
    assert (credited.tokens, credited.balance_after, credited.repeat) == (3, 3, False)

    with MemesClient(stack.base_url, registered.api_key) as memes:
        meme = memes.meme(*NEW_YORK, "cats on a train")
        assert (meme.tokens_charged, meme.balance_after, meme.kind) == (1, 2, "standard")
        assert meme.caption and meme.image_url.startswith("/v1/images/")

        stack.settled(registered.api_key, meme.request_id)  # the ledger records it just after
        outcome = memes.request(meme.request_id)
        assert (outcome.status, outcome.meme_id) == ("delivered", meme.meme_id)
        assert outcome.image_url == meme.image_url

        account = memes.me()
        assert account.client_id == registered.client_id
        assert (account.balance, account.tokens_charged, account.memes_delivered) == (2, 1, 1)


def test_a_retry_with_the_same_key_returns_the_first_meme_and_charges_once(
    stack: Stack, billing: BillingClient
) -> None:
    _, memes = new_client(stack, billing, tokens=5)
    with memes:
        first = memes.meme(*NEW_YORK, "food", idempotency_key="my-first-meme")
        again = memes.meme(*NEW_YORK, "food", idempotency_key="my-first-meme")

        assert again == first
        account = memes.me()
        assert (account.balance, account.tokens_charged, account.memes_requested) == (4, 1, 1)

        with pytest.raises(Conflict) as raised:
            memes.meme(*NEW_YORK, "not food", idempotency_key="my-first-meme")
        assert raised.value.idempotency_key == "my-first-meme"
        assert memes.me().balance == 4


def test_a_purchase_is_credited_once_by_its_id(stack: Stack, billing: BillingClient) -> None:
    client_id, memes = new_client(stack, billing, tokens=0)

    first = billing.purchase(client_id, 10, purchase_id="order-7")
    repeat = billing.purchase(client_id, 10, purchase_id="order-7")

    assert (first.repeat, repeat.repeat) == (False, True)
    assert repeat.balance_after == first.balance_after == 10
    with pytest.raises(Conflict):
        billing.purchase(client_id, 11, purchase_id="order-7")
    with memes:
        assert memes.me().balance == 10


def test_no_tokens_is_insufficient_tokens_with_the_balance(
    stack: Stack, billing: BillingClient
) -> None:
    _, memes = new_client(stack, billing, tokens=0)
    with memes:
        with pytest.raises(InsufficientTokens) as raised:
            memes.meme(*NEW_YORK, "food")
        assert (raised.value.status, raised.value.balance) == (402, 0)
        assert memes.me().balance == 0


def test_a_bad_latitude_is_invalid_request_naming_lat(stack: Stack, billing: BillingClient) -> None:
    _, memes = new_client(stack, billing, tokens=1)
    with memes:
        with pytest.raises(InvalidRequest) as raised:
            memes.meme(91.0, 0.0, "food")
        assert [f.field for f in raised.value.fields] == ["lat"]
        assert memes.me().balance == 1


@pytest.mark.parametrize("api_key", ["mk_" + "x" * 43, "not-a-key"], ids=["unknown", "malformed"])
def test_a_wrong_key_is_unauthorized(stack: Stack, api_key: str) -> None:
    with MemesClient(stack.base_url, api_key) as memes, pytest.raises(Unauthorized) as raised:
        memes.meme(*NEW_YORK, "food")
    assert raised.value.status == 401


def test_a_wrong_billing_token_is_unauthorized(stack: Stack) -> None:
    with BillingClient(stack.base_url, "not-the-token") as billing, pytest.raises(Unauthorized):
        billing.register()


def test_unknown_clients_and_requests_are_not_found(stack: Stack, billing: BillingClient) -> None:
    with pytest.raises(NotFound):
        billing.purchase(uuid.uuid4().hex, 1, purchase_id="order-x")
    with pytest.raises(NotFound):
        billing.subscribe(uuid.uuid4().hex)
    _, memes = new_client(stack, billing, tokens=0)
    with memes, pytest.raises(NotFound):
        memes.request(uuid.uuid4().hex)


def test_a_failed_generation_is_not_retried_and_is_refunded(
    stack: Stack, billing: BillingClient
) -> None:
    _, memes = new_client(stack, billing, tokens=1)
    with memes:
        with pytest.raises(GenerationFailed) as raised:
            memes.meme(*NEW_YORK, f"please {FAULT_QUERY}")
        assert raised.value.request_id
        assert memes.request(raised.value.request_id).status == "refunded"
        account = memes.me()
        assert (account.balance, account.memes_requested) == (1, 1)


def test_a_rotated_key_works_and_the_old_one_is_unauthorized(
    stack: Stack, billing: BillingClient
) -> None:
    client_id, old = new_client(stack, billing, tokens=1)

    rotated = billing.rotate_api_key(client_id)

    assert (rotated.client_id, rotated.pending) == (client_id, False)
    with old, pytest.raises(Unauthorized):
        old.me()
    with MemesClient(stack.base_url, rotated.api_key) as memes:
        assert memes.me().balance == 1
    with pytest.raises(NotFound):
        billing.rotate_api_key(uuid.uuid4().hex)


def test_a_key_rotated_with_a_grace_leaves_the_old_one_working(
    stack: Stack, billing: BillingClient
) -> None:
    client_id, old = new_client(stack, billing, tokens=1)

    rotated = billing.rotate_api_key(client_id, old_key_valid_for_s=600)

    assert rotated.old_key_valid_until is not None
    assert 590 < (rotated.old_key_valid_until - datetime.now(UTC)).total_seconds() <= 600
    with old, MemesClient(stack.base_url, rotated.api_key) as new:
        assert old.me().balance == new.me().balance == 1
        leaked = billing.rotate_api_key(client_id)  # no grace: every replaced key ends
        assert leaked.old_key_valid_until is None
        with pytest.raises(Unauthorized):
            new.me()
    with pytest.raises(InvalidRequest) as refused:
        billing.rotate_api_key(client_id, old_key_valid_for_s=-1)
    assert refused.value.fields[0].field == "old_key_valid_for_s"


def test_a_registration_under_a_key_is_opened_once_and_its_key_can_be_replaced(
    stack: Stack, billing: BillingClient
) -> None:
    customer = f"customer-{uuid.uuid4().hex}"
    first = billing.register("demo", idempotency_key=customer)

    with pytest.raises(AlreadyRegistered) as again:
        billing.register("demo", idempotency_key=customer)

    assert again.value.client_id == first.client_id
    replaced = billing.rotate_api_key(first.client_id)
    with MemesClient(stack.base_url, replaced.api_key) as memes:
        assert memes.me().balance == 0


def test_subscribe_and_unsubscribe_round_trip(stack: Stack, billing: BillingClient) -> None:
    client_id, memes = new_client(stack, billing, tokens=2)
    until = datetime(2999, 1, 1, tzinfo=UTC)

    on = billing.subscribe(client_id, until=until)
    assert (on.client_id, on.ai_active, on.ai_until) == (client_id, True, until)
    with memes:
        assert memes.meme(*NEW_YORK, "food").kind == "ai"
        assert memes.me().ai_until_ms == to_ms(until)

        off = billing.unsubscribe(client_id)
        assert (off.ai_active, off.ai_until) == (False, None)
        assert memes.meme(*NEW_YORK, "food").kind == "standard"
        account = memes.me()
        assert (account.ai_active, account.balance) == (False, 0)

    open_ended = billing.subscribe(client_id)
    assert (open_ended.ai_active, open_ended.ai_until) == (True, None)
