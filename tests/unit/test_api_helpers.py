"""The API's pure pieces: how a ledger reply becomes an HTTP answer, ids, ETags, keys."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from api.errors import (
    ApiError,
    Conflict,
    DeadlineExceeded,
    GenerationFailed,
    InsufficientTokens,
    KafkaUnavailable,
    RequestInProgress,
    Unauthorized,
    field_name,
)
from api.keys import KeyTable, key_hash
from api.metrics import Metrics
from api.routes.images import etag_matches
from api.routes.memes import answer, fingerprint, request_id_for
from core.clock import now_ms
from core.settings import Settings
from ledger.fold import LIST_PRICE
from schemas.events import (
    AccountOpened,
    MemeDelivered,
    MemeGenerated,
    RefundReason,
    RejectReason,
    Reply,
    dump,
)

# One meme, as the ledger delivers it and as its generator tells it.
MEME: dict[str, Any] = {
    "client_id": "c1",
    "region": "local",
    "occurred_at_ms": 1,
    "request_id": "r1",
    "meme_id": "m1",
    "kind": "ai",
    "template": "drake",
    "caption": "hello",
    "image_key": "a" * 64 + ".png",
}
DELIVERED = MemeDelivered(**MEME, event_id="e1", seq=3, balance_after=4)
MADE = MemeGenerated(**MEME, event_id="g1", replied_to="x")


def body(error: ApiError) -> dict[str, Any]:
    """The problem document the client receives for ``error``."""
    response = error.response()
    assert response.media_type == "application/problem+json"
    return json.loads(bytes(response.body))


def reply(outcome: str, **fields: object) -> Reply:
    return Reply(correlation_id="x", outcome=outcome, **fields)


# --- reply -> answer -------------------------------------------------------------------


def test_delivered_reply_is_the_meme_with_its_image_url() -> None:
    meme = answer(
        "r1", reply("delivered", balance=4, entry=DELIVERED, caption="hello", tokens_charged=3)
    )
    assert meme.model_dump() == {
        "request_id": "r1",
        "meme_id": "m1",
        "caption": "hello",
        "template": "drake",
        "kind": "ai",
        "image_url": f"/v1/images/{'a' * 64}.png",
        "tokens_charged": 3,
        "balance_after": 4,
    }


def test_a_meme_its_generator_told_is_the_same_answer_as_a_delivery() -> None:
    made = answer("r1", reply("made", balance=4, made=MADE, caption="hello", tokens_charged=3))
    delivered = answer(
        "r1", reply("delivered", balance=4, entry=DELIVERED, caption="hello", tokens_charged=3)
    )
    assert made == delivered


def test_a_reply_without_tokens_charged_was_charged_the_list_price() -> None:
    """A v2 reply (a processor from before v3) does not say what it charged."""
    meme = answer("r1", reply("delivered", balance=4, entry=DELIVERED, caption="hello"))
    assert meme.tokens_charged == LIST_PRICE.of("ai")


@pytest.mark.parametrize(
    ("outcome", "reason", "error", "status"),
    [
        ("rejected", RejectReason.INSUFFICIENT_TOKENS, InsufficientTokens, 402),
        ("rejected", RejectReason.UNKNOWN_CLIENT, Unauthorized, 401),
        ("rejected", RejectReason.IDEMPOTENCY_CONFLICT, Conflict, 409),
        ("refunded", RefundReason.GENERATOR_FAILED, GenerationFailed, 502),
        ("refunded", RefundReason.DEADLINE_EXPIRED, DeadlineExceeded, 504),
    ],
)
def test_each_ledger_outcome_has_its_status(
    outcome: str, reason: int, error: type[ApiError], status: int
) -> None:
    with pytest.raises(error) as raised:
        answer("r1", reply(outcome, reason=reason, balance=0))
    assert raised.value.status_code == status


def test_insufficient_tokens_carries_the_balance() -> None:
    with pytest.raises(InsufficientTokens) as raised:
        answer("r1", reply("rejected", reason=RejectReason.INSUFFICIENT_TOKENS, balance=0))
    assert body(raised.value) == {
        "type": "about:blank",
        "title": "Payment Required",
        "status": 402,
        "error": "insufficient_tokens",
        "balance": 0,
    }


def test_refunds_say_so_and_name_the_request() -> None:
    for reason in RefundReason:
        with pytest.raises((GenerationFailed, DeadlineExceeded)) as raised:
            answer("r1", reply("refunded", reason=reason))
        assert body(raised.value)["refunded"] is True
        assert body(raised.value)["request_id"] == "r1"


def test_no_reply_is_a_504_that_tells_where_to_poll() -> None:
    with pytest.raises(DeadlineExceeded) as raised:
        answer("r1", None)
    answered = body(raised.value)
    assert answered["request_id"] == "r1"
    assert "GET /v1/requests/r1" in answered["detail"]
    assert "refunded" not in answered


def test_kafka_unavailable_keeps_the_kafka_code_and_asks_to_retry() -> None:
    error = KafkaUnavailable("broker down", kafka_code="_MSG_TIMED_OUT")
    assert error.status_code == 503
    assert error.headers() == {"Retry-After": "1"}
    assert body(error)["kafka_code"] == "_MSG_TIMED_OUT"


# --- ids --------------------------------------------------------------------------------


def test_request_id_is_derived_from_client_and_idempotency_key() -> None:
    assert request_id_for("c1", "k") == request_id_for("c1", "k")
    assert request_id_for("c1", "k") != request_id_for("c2", "k")
    assert request_id_for("c1", None) != request_id_for("c1", None)
    assert len(request_id_for("c1", "k")) == 32


def test_fingerprint_distinguishes_every_parameter() -> None:
    base = fingerprint(1.0, 2.0, "q")
    assert base == fingerprint(1.0, 2.0, "q")
    assert len({base, fingerprint(1.5, 2.0, "q"), fingerprint(1.0, 2.5, "q")}) == 3
    assert base != fingerprint(1.0, 2.0, "q2")
    assert base == hashlib.sha256(b"1.0|2.0|q").hexdigest()[:32]


# --- HTTP details -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ('"k.png"', True),
        ("k.png", True),
        ('W/"k.png"', True),
        ('"other", "k.png"', True),
        ("*", True),
        ('"other"', False),
    ],
)
def test_if_none_match(header: str | None, matches: bool) -> None:
    assert etag_matches(header, "k.png") is matches


@pytest.mark.parametrize(
    ("loc", "name"),
    [
        (("query", "lat"), "lat"),
        (("header", "idempotency-key"), "Idempotency-Key"),
        (("header", "Idempotency-Key"), "Idempotency-Key"),
        (("body", "tokens"), "tokens"),
        (("body",), "body"),
        (("path", "key"), "key"),
        (("body", "items", 0, "x"), "items.0.x"),
    ],
)
def test_validation_errors_name_the_field_a_client_wrote(
    loc: tuple[int | str, ...], name: str
) -> None:
    assert field_name(loc) == name


# --- key table --------------------------------------------------------------------------


def opened(client_id: str, api_key: str) -> bytes:
    return dump(
        AccountOpened(
            event_id=f"{client_id}-0",
            client_id=client_id,
            region="local",
            occurred_at_ms=1,
            seq=1,
            balance_after=0,
            api_key_sha256=key_hash(api_key),
        )
    )


def test_key_table_maps_key_hashes_to_clients_and_honours_tombstones() -> None:
    table = KeyTable(Settings())  # not started: no Kafka involved
    table._apply(b"c1", opened("c1", "mk_one"))
    table._apply(b"c2", opened("c2", "mk_two"))
    table._apply(b"c3", b"not json")  # logged and skipped

    assert table.client_for("mk_one") == "c1"
    assert table.client_for("mk_two") == "c2"
    assert table.client_for("mk_three") is None
    assert len(table) == 2

    table._apply(b"c1", None)
    assert table.client_for("mk_one") is None


def test_a_new_key_for_a_client_replaces_the_old_one() -> None:
    table = KeyTable(Settings())
    table.add(key_hash("mk_old"), "c1")
    table.add(key_hash("mk_new"), "c1")
    assert table.client_for("mk_old") is None
    assert table.client_for("mk_new") == "c1"


def test_a_replaced_key_in_its_grace_works_until_its_end() -> None:
    """Scenario: a rotation keeps the old key for a grace, a later one without grace.
    We expect: the old key works until its end and not from then on; the rotation
    without grace ends it at once; keys of other clients are untouched."""
    table = KeyTable(Settings())
    table.add(key_hash("mk_other"), "c2")
    soon, past = now_ms() + 60_000, now_ms() - 1
    table.add(key_hash("mk_new"), "c1", [(key_hash("mk_old"), soon), (key_hash("mk_gone"), past)])

    assert table.client_for("mk_new") == "c1"
    assert table.client_for("mk_old") == "c1"
    assert table.client_for("mk_gone") is None  # its grace is over
    assert (table.grace_ends_ms("mk_old"), table.grace_ends_ms("mk_new")) == (soon, None)

    table.add(key_hash("mk_newest"), "c1")  # a leaked key: no grace
    assert [table.client_for(k) for k in ("mk_newest", "mk_new", "mk_old")] == ["c1", None, None]
    assert table.client_for("mk_other") == "c2"
    assert len(table) == 2


# --- metrics ----------------------------------------------------------------------------


def test_ledger_counters_are_labelled_by_kind_and_reason_name() -> None:
    metrics = Metrics()
    metrics.observe_reply(reply("delivered", balance=4, entry=DELIVERED))
    metrics.observe_reply(reply("made", balance=4, made=MADE, tokens_charged=1))
    metrics.observe_reply(reply("rejected", reason=RejectReason.INSUFFICIENT_TOKENS))
    metrics.observe_reply(reply("refunded", reason=RefundReason.DEADLINE_EXPIRED))
    metrics.observe_reply(reply("credited"))  # not a meme outcome: not counted

    text = metrics.render().decode()
    assert 'maas_charges_total{kind="ai"} 2.0' in text
    assert 'maas_rejections_total{reason="insufficient_tokens"} 1.0' in text
    assert 'maas_refunds_total{reason="deadline_expired"} 1.0' in text


def test_a_retry_the_ledger_cannot_wait_on_is_a_409_to_retry_later() -> None:
    with pytest.raises(RequestInProgress) as raised:
        answer("r1", reply("in_progress"))
    assert raised.value.status_code == 409
    assert raised.value.headers() == {"Retry-After": "1"}
    answered = body(raised.value)
    assert (answered["error"], answered["request_id"]) == ("request_in_progress", "r1")
