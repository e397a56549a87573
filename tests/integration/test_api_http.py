"""The HTTP API against a real region: broker, ledger processor, generators, API.

Each test states what a client does and what it must observe. Every rejected or
malformed request is followed by a ``/v1/me`` that proves the balance did not move.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import io
import json
import os
import re
import signal
import socket
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.keys import KeyTable
from core.blobstore import LocalBlobStore
from core.clock import to_ms
from core.topic_reader import read_topic
from core.topics import READS_HEADER, Topics
from schemas.events import MemeRequested, Reply, parse_input
from tests.stack import FAULT_QUERY, Stack, value_of

pytestmark = [pytest.mark.kafka, pytest.mark.shared_region]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_invalid(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert field in [f["field"] for f in body["fields"]], body


# --- happy path ---------------------------------------------------------------------


def test_a_meme_costs_exactly_one_token_and_its_image_is_served(stack: Stack) -> None:
    _, api_key = stack.new_client(tokens=3)
    assert stack.balance(api_key) == 3

    response = stack.meme(api_key, query="cats on a train")

    assert response.status_code == 200, response.text
    meme = response.json()
    assert meme["kind"] == "standard"
    assert meme["tokens_charged"] == 1
    assert meme["balance_after"] == 2
    assert meme["caption"] and meme["template"] and meme["meme_id"]
    assert re.fullmatch(r"/v1/images/[0-9a-f]{64}\.png", meme["image_url"])
    assert stack.balance(api_key) == 2

    image = stack.http.get(meme["image_url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(PNG_MAGIC)
    assert "immutable" in image.headers["cache-control"]
    etag = image.headers["etag"]
    assert etag.strip('"') == meme["image_url"].rsplit("/", 1)[1]

    again = stack.http.get(meme["image_url"], headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""

    # HEAD, as every GET resource should take it (it was 405): the GET's headers, no body.
    head = stack.http.head(meme["image_url"])
    assert head.status_code == 200, head.text
    assert head.content == b""
    assert head.headers["content-length"] == str(len(image.content))
    assert (head.headers["content-type"], head.headers["etag"]) == ("image/png", etag)
    assert stack.http.head("/readyz").status_code == 200
    assert stack.http.head("/memes").status_code == 405  # never a paid call
    assert stack.balance(api_key) == 2


def test_an_image_goes_when_its_retention_ends_and_comes_back_when_made_again(
    stack: Stack,
) -> None:
    _, api_key = stack.new_client(tokens=2)
    place = {"query": f"sweeping {uuid.uuid4().hex[:8]}", "lat": 12.5, "lon": 33.25}
    url = stack.meme(api_key, **place).json()["image_url"]
    webp = {"Accept": "image/webp"}
    served = stack.http.get(url, headers=webp)
    assert served.status_code == 200 and served.headers["content-type"] == "image/webp"
    assert served.headers["cache-control"] == "public, max-age=604800, immutable"

    store = LocalBlobStore(stack.settings.data_dir / "blobs")
    key = url.rsplit("/", 1)[1]
    week_ago = time.time() - 8 * 86_400
    os.utime(store.path(key), (week_ago, week_ago))
    assert store.sweep(time.time() - 7 * 86_400) == 1  # what `maas blobs sweep` does

    for headers in (webp, {}):  # its conversion this API process keeps goes with it
        gone = stack.http.get(url, headers=headers)
        assert gone.status_code == 404, gone.text
        assert (
            gone.json()["detail"]
            == "no such image (an image is kept 168 hours after it was last made)"
        )
    again = stack.meme(api_key, **place).json()  # the same standard meme, made again
    assert again["image_url"] == url
    assert stack.http.get(url).content.startswith(PNG_MAGIC)


def test_the_request_can_be_looked_up_afterwards(stack: Stack) -> None:
    _, api_key = stack.new_client(tokens=1)
    meme = stack.meme(api_key).json()

    view = stack.settled(api_key, meme["request_id"])

    assert view["status"] == "delivered"
    assert view["meme"]["meme_id"] == meme["meme_id"]


def test_reads_are_marked_so_that_the_ledger_settles_held_memes_before_them(
    stack: Stack,
) -> None:
    """Scenario: a meme, then GET /v1/me and GET /v1/requests/{id}.
    We expect: the two queries carry READS_HEADER in the requests topic (the ledger then
    settles the memes it holds before answering them) and the meme request does not; the
    account already counts the meme delivered (its outcome was in the log before the 200)."""
    client_id, api_key = stack.new_client(tokens=1)
    meme = stack.meme(api_key).json()

    me = stack.http.get("/v1/me", headers=stack.auth(api_key)).json()
    stack.http.get(f"/v1/requests/{meme['request_id']}", headers=stack.auth(api_key))

    assert me["memes_delivered"] == 1, me
    marked = Counter(
        (parse_input(value_of(m)).type, READS_HEADER in dict(m.headers() or []))
        for m in read_topic(stack.settings, Topics(stack.settings.region).requests)
        if m.key() == client_id.encode()
    )
    assert marked == {
        ("MemeRequested", False): 1,
        ("AccountQueried", True): 1,
        ("RequestQueried", True): 1,
    }, marked


def test_a_meme_is_told_by_its_generator_and_settled_by_the_ledger(stack: Stack) -> None:
    """Scenario: a meme made in time.
    We expect: the caller's one answer is the generator's (outcome "made", with the meme
    and the balance after the charge); the ledger then delivers that very meme and does
    not answer the caller a second time."""
    _, api_key = stack.new_client(tokens=2)
    meme = stack.meme(api_key).json()
    assert stack.settled(api_key, meme["request_id"])["status"] == "delivered"

    topics = Topics(stack.settings.region)
    (requested,) = [
        event
        for event in (parse_input(value_of(m)) for m in read_topic(stack.settings, topics.requests))
        if isinstance(event, MemeRequested) and event.request_id == meme["request_id"]
    ]
    answers = [
        reply
        for reply in (
            Reply.model_validate_json(value_of(m))
            for m in read_topic(stack.settings, topics.replies)
        )
        if reply.correlation_id == requested.event_id
    ]
    assert [a.outcome for a in answers] == ["made"]
    (made,) = answers
    assert made.made is not None and made.made.meme_id == meme["meme_id"]
    assert (
        (made.balance, made.tokens_charged)
        == (1, 1)
        == (
            meme["balance_after"],
            meme["tokens_charged"],
        )
    )


def test_account_shows_usage(stack: Stack) -> None:
    client_id, api_key = stack.new_client(tokens=2)
    stack.settled(api_key, stack.meme(api_key).json()["request_id"])

    account = stack.account(api_key)

    assert account["client_id"] == client_id
    assert account["balance"] == 1
    assert account["tokens_credited"] == 2
    assert account["tokens_charged"] == 1
    assert account["memes_delivered"] == 1
    assert account["ai_active"] is False


# --- idempotency --------------------------------------------------------------------


def test_same_idempotency_key_returns_the_first_meme_and_charges_once(stack: Stack) -> None:
    _, api_key = stack.new_client(tokens=5)
    key = f"retry-{uuid.uuid4().hex}"

    first = stack.meme(api_key, idempotency_key=key)
    second = stack.meme(api_key, idempotency_key=key)

    assert first.status_code == second.status_code == 200
    assert first.json()["meme_id"] == second.json()["meme_id"]
    assert first.json()["request_id"] == second.json()["request_id"]
    assert stack.balance(api_key) == 4


def test_same_idempotency_key_with_other_parameters_is_a_conflict(stack: Stack) -> None:
    _, api_key = stack.new_client(tokens=5)
    key = f"retry-{uuid.uuid4().hex}"
    assert stack.meme(api_key, idempotency_key=key, query="dogs").status_code == 200

    response = stack.meme(api_key, idempotency_key=key, query="not dogs")

    assert response.status_code == 409, response.text
    assert stack.balance(api_key) == 4


def test_purchases_are_idempotent_by_purchase_id(stack: Stack) -> None:
    client_id, api_key = stack.new_client()
    purchase_id = f"order-{uuid.uuid4().hex}"
    url = f"/v1/clients/{client_id}/purchases"

    first = stack.http.post(
        url, json={"purchase_id": purchase_id, "tokens": 10}, headers=stack.billing
    )
    second = stack.http.post(
        url, json={"purchase_id": purchase_id, "tokens": 10}, headers=stack.billing
    )

    assert first.status_code == 201, first.text
    assert second.status_code in (200, 201), second.text
    assert first.json() == second.json()
    assert first.json()["balance_after"] == 10
    assert stack.balance(api_key) == 10


def test_same_purchase_id_with_another_amount_is_a_conflict(stack: Stack) -> None:
    client_id, api_key = stack.new_client()
    purchase_id = f"order-{uuid.uuid4().hex}"
    stack.purchase(client_id, 10, purchase_id)

    response = stack.http.post(
        f"/v1/clients/{client_id}/purchases",
        json={"purchase_id": purchase_id, "tokens": 11},
        headers=stack.billing,
    )

    assert response.status_code == 409, response.text
    assert stack.balance(api_key) == 10


# --- Memes AI -------------------------------------------------------------------------


def test_subscription_switches_between_ai_and_standard_memes(stack: Stack) -> None:
    client_id, api_key = stack.new_client(tokens=3)
    url = f"/v1/clients/{client_id}/subscription"

    on = stack.http.put(url, json={"until": "2999-01-01T00:00:00+00:00"}, headers=stack.billing)
    assert on.status_code == 200, on.text
    assert on.json()["ai_active"] is True
    assert on.json()["ai_until"].startswith("2999-01-01")
    assert stack.meme(api_key).json()["kind"] == "ai"

    off = stack.http.delete(url, headers=stack.billing)
    assert off.status_code == 200, off.text
    assert off.json() == {"client_id": client_id, "ai_active": False, "ai_until": None}
    assert stack.meme(api_key).json()["kind"] == "standard"
    assert stack.balance(api_key) == 1


def test_an_ended_subscription_reads_as_inactive(stack: Stack) -> None:
    """Before, ai_active was the stored switch: true after ai_until had passed, while the
    memes were standard (and for an until in 2001 at once)."""
    client_id, api_key = stack.new_client(tokens=2)
    url = f"/v1/clients/{client_id}/subscription"
    ends = datetime.now(UTC) + timedelta(seconds=1)

    on = stack.http.put(url, json={"until": ends.isoformat()}, headers=stack.billing)
    assert on.json()["ai_active"] is True, on.text
    time.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds()) + 0.2)
    me = stack.http.get("/v1/me", headers=stack.auth(api_key)).json()
    assert (me["ai_active"], me["ai_until_ms"]) == (False, to_ms(ends))
    assert stack.meme(api_key).json()["kind"] == "standard"


def test_a_rotated_api_key_replaces_the_old_one_and_keeps_the_account(stack: Stack) -> None:
    client_id, old_key = stack.new_client(tokens=3)
    stack.http.put(f"/v1/clients/{client_id}/subscription", json={}, headers=stack.billing)
    assert stack.meme(old_key).status_code == 200

    rotated = stack.http.post(f"/v1/clients/{client_id}/api-key", headers=stack.billing)

    assert rotated.status_code == 201, rotated.text
    body = rotated.json()
    new_key = body["api_key"]
    assert (body["client_id"], body["pending"]) == (client_id, False)
    assert new_key.startswith("mk_") and new_key != old_key
    refused = stack.http.get("/v1/me", headers=stack.auth(old_key))
    assert refused.status_code == 401, refused.text
    assert stack.meme(old_key).status_code == 401
    account = stack.account(new_key)
    assert (account["balance"], account["ai_active"]) == (2, True)
    assert stack.meme(new_key).json()["kind"] == "ai"
    assert stack.balance(new_key) == 1
    ledger = stack.http.get(f"/v1/clients/{client_id}/ledger", headers=stack.auditor).json()
    entries = ledger["entries"]
    assert [e["type"] for e in entries].count("ApiKeyRotated") == 1
    (entry,) = [e for e in entries if e["type"] == "ApiKeyRotated"]
    assert entry["api_key_sha256"] == hashlib.sha256(new_key.encode()).hexdigest()
    assert new_key not in str(ledger)

    # A restarted API reads the clients table from the beginning: the new key, not the old.
    table = KeyTable(stack.settings)
    loop = asyncio.new_event_loop()
    try:
        table.start(loop)
        assert table.wait_loaded(10.0)
        assert (table.client_for(new_key), table.client_for(old_key)) == (client_id, None)
    finally:
        table.stop()
        loop.close()


def test_a_rotation_with_a_grace_keeps_the_old_key_working_until_it_ends(stack: Stack) -> None:
    """Scenario: billing rotates a running client's key with a 3 s grace, and repeats
    the rotation as if its answer had been lost.
    We expect: the first key, the one the client runs on, and both new keys work until
    the grace ends; then only the last key does, also for an API that reads the keys
    table anew; the ledger holds hashes only."""
    client_id, first_key = stack.new_client(tokens=5)
    url = f"/v1/clients/{client_id}/api-key"
    grace = {"old_key_valid_for_s": 3}

    rotated = stack.http.post(url, json=grace, headers=stack.billing)
    again = stack.http.post(url, json=grace, headers=stack.billing)

    assert rotated.status_code == again.status_code == 201, (rotated.text, again.text)
    lost_key, last_key = rotated.json()["api_key"], again.json()["api_key"]
    ends = datetime.fromisoformat(again.json()["old_key_valid_until"])
    assert 1.0 < (ends - datetime.now(UTC)).total_seconds() <= 3.0
    answers = {key: stack.meme(key) for key in (first_key, lost_key, last_key)}
    assert [a.status_code for a in answers.values()] == [200, 200, 200]
    # The replaced keys' answers say when they stop working (RFC 8594); the new key's not.
    sunsets = [a.headers.get("Sunset") for a in answers.values()]
    assert sunsets[2] is None
    assert all(parsedate_to_datetime(s) <= ends.replace(microsecond=0) for s in sunsets[:2])
    assert parsedate_to_datetime(sunsets[1]) == ends.replace(microsecond=0)
    # A refusal says it too: a parameter's (422), the domain's (404).
    refused = [
        stack.meme(first_key, lat=91),
        stack.http.get(f"/v1/requests/{uuid.uuid4().hex}", headers=stack.auth(first_key)),
    ]
    assert [r.status_code for r in refused] == [422, 404], [r.text for r in refused]
    assert [r.headers.get("Sunset") for r in refused] == [sunsets[0]] * 2
    assert stack.balance(last_key) == 2
    table = KeyTable(stack.settings)
    loop = asyncio.new_event_loop()
    try:
        table.start(loop)
        assert table.wait_loaded(10.0)
        assert table.client_for(first_key) == client_id  # a restarted API keeps the grace

        time.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds()) + 0.1)

        assert stack.http.get("/v1/me", headers=stack.auth(first_key)).status_code == 401
        assert stack.meme(lost_key).status_code == 401
        assert (table.client_for(first_key), table.client_for(last_key)) == (None, client_id)
    finally:
        table.stop()
        loop.close()
    assert stack.balance(last_key) == 2  # the refused calls charged nothing
    ledger = stack.http.get(f"/v1/clients/{client_id}/ledger", headers=stack.auditor).json()
    (_, second) = [e for e in ledger["entries"] if e["type"] == "ApiKeyRotated"]
    assert [k["api_key_sha256"] for k in second["replaced_keys"]] == [
        hashlib.sha256(k.encode()).hexdigest() for k in (first_key, lost_key)
    ]
    assert first_key not in str(ledger) and last_key not in str(ledger)


def test_a_rotation_refuses_a_grace_out_of_range(stack: Stack) -> None:
    client_id, api_key = stack.new_client(tokens=1)
    url = f"/v1/clients/{client_id}/api-key"

    for body, field in (
        ({"old_key_valid_for_s": -1}, "old_key_valid_for_s"),
        ({"old_key_valid_for_s": 7 * 86_400 + 1}, "old_key_valid_for_s"),
        ({"old_key_valid_for_s": "soon"}, "old_key_valid_for_s"),
        ({"old_key_valid_for_s": True}, "old_key_valid_for_s"),
        ({"old_key_valid_for_s": 1.5}, "old_key_valid_for_s"),
        ({"old_key_valid_days": 1}, "old_key_valid_days"),
    ):
        assert_invalid(stack.http.post(url, json=body, headers=stack.billing), field)

    assert stack.balance(api_key) == 1  # the key was never replaced


def test_a_registration_under_an_idempotency_key_opens_one_account(stack: Stack) -> None:
    """Before, every call opened an account: a retry after a lost answer left an
    orphan, and billing could not map its customer to one client."""
    customer = {"Idempotency-Key": f"customer-{uuid.uuid4().hex}", **stack.billing}

    first = stack.http.post("/v1/clients", json={"name": "c"}, headers=customer)
    again = stack.http.post("/v1/clients", json={"name": "c"}, headers=customer)
    other = stack.http.post(
        "/v1/clients", headers={**customer, "Idempotency-Key": f"customer-{uuid.uuid4().hex}"}
    )

    assert first.status_code == 201, first.text
    client_id, api_key = first.json()["client_id"], first.json()["api_key"]
    assert again.status_code == 409, again.text
    assert (again.json()["error"], again.json()["client_id"]) == ("already_registered", client_id)
    assert f"/v1/clients/{client_id}/api-key" in again.json()["detail"]
    assert other.status_code == 201 and other.json()["client_id"] != client_id
    assert stack.account(api_key)["balance"] == 0  # the first key still works
    ledger = stack.http.get(f"/v1/clients/{client_id}/ledger", headers=stack.auditor).json()
    assert [e["type"] for e in ledger["entries"]] == ["AccountOpened"]
    bad = stack.http.post("/v1/clients", headers={**customer, "Idempotency-Key": "a b"})
    assert_invalid(bad, "Idempotency-Key")
    twice = stack.http.post(
        "/v1/clients",
        headers=[*stack.billing.items(), ("Idempotency-Key", "k1"), ("Idempotency-Key", "k2")],
    )
    assert twice.json()["fields"] == [
        {"field": "Idempotency-Key", "message": "given more than once"}
    ]


def test_a_key_rotation_needs_billing_and_a_known_client(stack: Stack) -> None:
    client_id, api_key = stack.new_client(tokens=1)
    url = f"/v1/clients/{client_id}/api-key"

    assert stack.http.post(url, headers=stack.auth(api_key)).status_code == 401
    assert stack.http.post(url, headers=stack.auditor).status_code == 401
    unknown = stack.http.post(f"/v1/clients/{uuid.uuid4().hex}/api-key", headers=stack.billing)
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["error"] == "not_found"
    assert stack.balance(api_key) == 1


def test_a_subscription_until_a_past_time_is_refused(stack: Stack) -> None:
    """Before, it was switched on and answered ``ai_active: false``, as if it had done
    something: most likely a wrong year."""
    client_id, api_key = stack.new_client(tokens=1)
    url = f"/v1/clients/{client_id}/subscription"

    past = stack.http.put(url, json={"until": "2001-01-01T00:00:00Z"}, headers=stack.billing)

    assert_invalid(past, "until")
    assert past.json()["fields"] == [
        {
            "field": "until",
            "message": "must be in the future; to switch Memes AI off, DELETE the subscription",
        }
    ]
    assert stack.account(api_key)["ai_active"] is False
    ledger = stack.http.get(f"/v1/clients/{client_id}/ledger", headers=stack.auditor).json()
    assert [e["type"] for e in ledger["entries"]] == ["AccountOpened", "TokensCredited"]


def test_the_until_given_is_the_until_kept_to_the_millisecond(stack: Stack) -> None:
    """Before, the API took ``until`` through a float and kept this one as ...29.771."""
    client_id, api_key = stack.new_client(tokens=1)
    until = "2039-06-11T18:02:29.772Z"

    on = stack.http.put(
        f"/v1/clients/{client_id}/subscription", json={"until": until}, headers=stack.billing
    )
    assert on.status_code == 200, on.text
    assert datetime.fromisoformat(on.json()["ai_until"]) == datetime.fromisoformat(until)
    me = stack.http.get("/v1/me", headers=stack.auth(api_key)).json()
    assert me["ai_until_ms"] == 2191428149772


def test_open_ended_subscription_without_a_body(stack: Stack) -> None:
    client_id, api_key = stack.new_client(tokens=1)

    on = stack.http.put(f"/v1/clients/{client_id}/subscription", headers=stack.billing)

    assert on.status_code == 200, on.text
    assert on.json()["ai_until"] is None
    assert stack.meme(api_key).json()["kind"] == "ai"


# --- 401 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="not-bearer"),
        pytest.param({"Authorization": "Bearer"}, id="empty-bearer"),
        pytest.param({"Authorization": "Bearer not-a-key"}, id="malformed-key"),
        pytest.param({"Authorization": "Bearer mk_" + "x" * 43}, id="unknown-key"),
    ],
)
def test_a_meme_without_a_valid_api_key_is_401(stack: Stack, headers: dict[str, str]) -> None:
    response = stack.http.get("/memes", params={"lat": 1, "lon": 2, "query": "q"}, headers=headers)

    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    assert response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_the_billing_token_is_not_an_api_key(stack: Stack) -> None:
    response = stack.http.get("/v1/me", headers=stack.billing)
    assert response.status_code == 401


@pytest.mark.parametrize(
    "token", [None, "wrong-token", "mk_" + "y" * 43], ids=["missing", "wrong", "client-key"]
)
def test_billing_routes_need_the_billing_token(stack: Stack, token: str | None) -> None:
    client_id, api_key = stack.new_client(tokens=1)
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    responses = [
        stack.http.post("/v1/clients", json={}, headers=headers),
        stack.http.post(
            f"/v1/clients/{client_id}/purchases",
            json={"purchase_id": "p1", "tokens": 5},
            headers=headers,
        ),
        stack.http.put(f"/v1/clients/{client_id}/subscription", headers=headers),
        stack.http.delete(f"/v1/clients/{client_id}/subscription", headers=headers),
    ]

    assert [r.status_code for r in responses] == [401, 401, 401, 401]
    assert all(r.headers["www-authenticate"] == "Bearer" for r in responses)
    assert stack.balance(api_key) == 1
    assert stack.account(api_key)["ai_active"] is False


def test_a_client_api_key_is_not_the_billing_token(stack: Stack) -> None:
    client_id, api_key = stack.new_client(tokens=1)
    response = stack.http.post(
        f"/v1/clients/{client_id}/purchases",
        json={"purchase_id": "p1", "tokens": 5},
        headers=stack.auth(api_key),
    )
    assert response.status_code == 401
    assert stack.balance(api_key) == 1


# --- 402 ------------------------------------------------------------------------------


def test_no_tokens_is_402_with_the_balance(stack: Stack) -> None:
    _, api_key = stack.new_client(tokens=1)
    assert stack.meme(api_key).status_code == 200

    response = stack.meme(api_key)

    assert response.status_code == 402, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Payment Required",
        "status": 402,
        "error": "insufficient_tokens",
        "balance": 0,
    }
    assert stack.balance(api_key) == 0
    assert stack.account(api_key)["memes_requested"] == 2


def test_concurrent_retries_beyond_what_the_ledger_waits_on_get_409_at_once(
    stack: Stack,
) -> None:
    """Scenario: ten identical requests (one Idempotency-Key) at once, while the meme is
    still being made (the standard generator is paused).

    We expect: the ledger waits on eight of them; the other two are answered at once
    with 409 ``request_in_progress`` and ``Retry-After``, not a 504 at the deadline; once
    the generator goes on, the eight get the same meme, and one token was charged.
    """
    _, api_key = stack.new_client(tokens=5)
    key = f"burst-{uuid.uuid4().hex}"
    generator = stack.procs["generator-standard"]
    generator.send_signal(signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(max_workers=10) as pool:
            started = time.monotonic()
            futures = [pool.submit(stack.meme, api_key, idempotency_key=key) for _ in range(10)]
            while sum(f.done() for f in futures) < 2 and time.monotonic() - started < 4:
                time.sleep(0.02)
            early = [f.result() for f in futures if f.done()]
            generator.send_signal(signal.SIGCONT)
            responses = [f.result() for f in futures]
    finally:
        generator.send_signal(signal.SIGCONT)

    assert [r.status_code for r in early] == [409, 409], [r.text for r in early]
    for response in early:
        assert response.json()["error"] == "request_in_progress"
        assert response.headers["retry-after"] == "1"
    assert Counter(r.status_code for r in responses) == {200: 8, 409: 2}
    memes = {r.json()["meme_id"] for r in responses if r.status_code == 200}
    assert len(memes) == 1
    assert stack.balance(api_key) == 4


# --- 422 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"lat": "abc"}, "lat", id="lat-not-a-number"),
        pytest.param({"lat": 91}, "lat", id="lat-91"),
        pytest.param({"lat": -90.0001}, "lat", id="lat-below"),
        pytest.param({"lon": -181}, "lon", id="lon-minus-181"),
        pytest.param({"lon": 180.5}, "lon", id="lon-above"),
        pytest.param({"query": None}, "query", id="query-missing"),
        pytest.param({"query": ""}, "query", id="query-empty"),
        pytest.param({"query": "q" * 201}, "query", id="query-201-chars"),
        pytest.param({"lat": None}, "lat", id="lat-missing"),
    ],
)
def test_malformed_meme_parameters_are_422_naming_the_field(
    stack: Stack, params: dict[str, str | float | None], field: str
) -> None:
    _, api_key = stack.new_client(tokens=1)
    query = {"lat": 1.5, "lon": 2.5, "query": "q", **params}
    query = {k: v for k, v in query.items() if v is not None}

    response = stack.http.get("/memes", params=query, headers=stack.auth(api_key))

    assert_invalid(response, field)
    assert stack.balance(api_key) == 1


def test_a_parameter_no_route_takes_is_422_and_charges_nothing(stack: Stack) -> None:
    """Ignored before: ``&kind=ai`` was answered with whatever kind the client has."""
    client_id, api_key = stack.new_client(tokens=1)

    response = stack.http.get(
        "/memes",
        params={"lat": 1.5, "lon": 2.5, "query": "q", "kind": "ai"},
        headers=stack.auth(api_key),
    )

    assert_invalid(response, "kind")
    assert response.json()["fields"] == [
        {"field": "kind", "message": "not a parameter of this route (it takes: lat, lon, query)"}
    ]
    assert stack.balance(api_key) == 1
    ledger = stack.http.get(
        f"/v1/clients/{client_id}/ledger", params={"form": "csv"}, headers=stack.auditor
    )
    assert_invalid(ledger, "form")
    me = stack.http.get("/v1/me", params={"verbose": "1"}, headers=stack.auth(api_key))
    assert me.json()["fields"][0]["message"] == "not a parameter of this route (it takes: none)"
    unnamed = stack.http.get("/memes?=5&lat=1.5&lon=2.5&query=q", headers=stack.auth(api_key))
    assert [f["field"] for f in unnamed.json()["fields"]] == ["(unnamed)"]  # not "query"
    assert stack.balance(api_key) == 1


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1_0", " 10", "10 ", "0x10", "1,5"])
def test_a_coordinate_that_is_not_a_decimal_number_is_told_so(stack: Stack, value: str) -> None:
    """Python's float() reads "1_0" and " 10" as 10, and "nan" as a number."""
    _, api_key = stack.new_client(tokens=1)

    response = stack.http.get(
        "/memes", params={"lat": 1.5, "lon": value, "query": "q"}, headers=stack.auth(api_key)
    )

    assert_invalid(response, "lon")
    assert response.json()["fields"] == [
        {"field": "lon", "message": "expected a finite decimal number such as 51.5, -0.12 or 1e-05"}
    ]
    assert stack.balance(api_key) == 1


@pytest.mark.parametrize("value", ["+1.5", "1.", ".5", "-0", "1E1", "1e-05", "-2.5e+1"])
def test_a_coordinate_in_any_decimal_notation_is_taken(stack: Stack, value: str) -> None:
    _, api_key = stack.new_client(tokens=1)

    response = stack.http.get(
        "/memes", params={"lat": value, "lon": 2.5, "query": "q"}, headers=stack.auth(api_key)
    )

    assert response.status_code == 200, response.text
    assert stack.balance(api_key) == 0


def test_query_of_200_chars_is_accepted(stack: Stack) -> None:
    _, api_key = stack.new_client(tokens=1)
    assert stack.meme(api_key, query="q" * 200).status_code == 200


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        ("a%00b", "control character U+0000 is not allowed"),
        ("tab%09tab", "control character U+0009 is not allowed"),
        ("%C2%85", "control character U+0085 is not allowed"),
        ("caf%E9", "not valid UTF-8: percent-encode the text's UTF-8 bytes"),  # Latin-1
    ],
)
def test_a_query_that_is_not_typed_text_is_422_and_charges_nothing(
    stack: Stack, encoded: str, message: str
) -> None:
    """Starlette decodes an invalid UTF-8 byte to U+FFFD: before this was refused, such
    a query was charged for a meme captioned with replacement characters."""
    _, api_key = stack.new_client(tokens=1)
    url = f"/memes?lat=1.5&lon=2.5&query={encoded}"
    response = stack.http.get(url, headers=stack.auth(api_key))
    assert_invalid(response, "query")
    assert {"field": "query", "message": message} in response.json()["fields"]
    assert stack.balance(api_key) == 1
    assert stack.meme(api_key, query="café 日本").status_code == 200  # UTF-8 is welcome


@pytest.mark.parametrize(
    "key", ["", "has space", "x" * 129, "slash/y", "semi;colon"], ids=lambda k: f"len{len(k)}"
)
def test_bad_idempotency_key_is_422_naming_the_header(stack: Stack, key: str) -> None:
    _, api_key = stack.new_client(tokens=1)

    response = stack.http.get(
        "/memes",
        params={"lat": 1, "lon": 2, "query": "q"},
        headers={**stack.auth(api_key), "Idempotency-Key": key},
    )

    assert_invalid(response, "Idempotency-Key")
    assert stack.balance(api_key) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"purchase_id": "p", "tokens": 0}, "tokens", id="tokens-0"),
        pytest.param({"purchase_id": "p", "tokens": -1}, "tokens", id="tokens-negative"),
        pytest.param({"purchase_id": "p", "tokens": "x"}, "tokens", id="tokens-x"),
        pytest.param({"purchase_id": "p", "tokens": 1.5}, "tokens", id="tokens-fraction"),
        pytest.param({"purchase_id": "p", "tokens": 10**9 + 1}, "tokens", id="tokens-too-many"),
        pytest.param({"tokens": 5}, "purchase_id", id="purchase-id-missing"),
        pytest.param({"purchase_id": "a b", "tokens": 5}, "purchase_id", id="purchase-id-bad"),
        pytest.param(
            {"purchase_id": "p", "tokens": 5, "currency": "EUR"}, "currency", id="unknown-field"
        ),
    ],
)
def test_malformed_purchases_are_422_naming_the_field(
    stack: Stack, body: dict[str, object], field: str
) -> None:
    client_id, api_key = stack.new_client(tokens=1)

    response = stack.http.post(
        f"/v1/clients/{client_id}/purchases", json=body, headers=stack.billing
    )

    assert_invalid(response, field)
    assert stack.balance(api_key) == 1


@pytest.mark.parametrize(
    ("url", "headers", "field"),
    [
        ("/memes?lat=1.5&lat=2.5&lon=2.5&query=q", [], "lat"),
        ("/memes?lat=1.5&lon=2.5&query=q&query=r", [], "query"),
        (
            "/memes?lat=1.5&lon=2.5&query=q",
            [("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
            "Idempotency-Key",
        ),
    ],
    ids=["lat", "query", "idempotency-key"],
)
def test_a_meme_parameter_given_twice_is_422_and_charges_nothing(
    stack: Stack, url: str, headers: list[tuple[str, str]], field: str
) -> None:
    _, api_key = stack.new_client(tokens=1)
    response = stack.http.get(url, headers=[*stack.auth(api_key).items(), *headers])
    assert_invalid(response, field)
    assert {"field": field, "message": "given more than once"} in response.json()["fields"]
    assert stack.balance(api_key) == 1


def test_two_authorization_headers_are_401(stack: Stack) -> None:
    _, api_key = stack.new_client(tokens=1)
    twice = [*stack.auth(api_key).items(), *stack.auth(api_key).items()]
    response = stack.http.get("/v1/me", headers=twice)
    assert response.status_code == 401, response.text
    assert response.json()["detail"] == "more than one Authorization header"


def test_a_client_name_with_a_control_character_is_422_naming_it(stack: Stack) -> None:
    response = stack.http.post("/v1/clients", json={"name": "bad\u0000name"}, headers=stack.billing)
    assert_invalid(response, "name")
    assert response.json()["fields"] == [
        {"field": "name", "message": "control character U+0000 is not allowed"}
    ]


@pytest.mark.parametrize(
    "until",
    ["tomorrow", "2999-01-01T00:00:00", 12, "9999-12-31T23:59:59-05:00"],
    # The last one is in the year 10000 in UTC: before, it was switched on and then
    # answered 500, as no datetime holds that year.
    ids=["text", "no-timezone", "number", "after-9999-in-utc"],
)
def test_subscription_until_must_be_a_datetime_with_timezone(stack: Stack, until: object) -> None:
    client_id, api_key = stack.new_client(tokens=1)

    response = stack.http.put(
        f"/v1/clients/{client_id}/subscription", json={"until": until}, headers=stack.billing
    )

    assert_invalid(response, "until")
    assert stack.account(api_key)["ai_active"] is False


def test_a_subscription_field_that_does_not_exist_is_refused_not_ignored(stack: Stack) -> None:
    """``{"days": 30}`` is not how a subscription ends (``until`` is): ignored, it would
    switch Memes AI on for good."""
    client_id, api_key = stack.new_client(tokens=1)

    response = stack.http.put(
        f"/v1/clients/{client_id}/subscription", json={"days": 30}, headers=stack.billing
    )

    assert_invalid(response, "days")
    assert stack.account(api_key)["ai_active"] is False


@pytest.mark.parametrize(
    "key", ["abc.png", "0" * 64 + ".jpg", "../../etc/passwd", "0" * 63 + "G.png"]
)
def test_malformed_image_keys_are_refused(stack: Stack, key: str) -> None:
    response = stack.http.get(f"/v1/images/{key}")
    assert response.status_code in (404, 422), response.text
    if response.status_code == 422:
        assert_invalid(response, "key")


# --- 404 ------------------------------------------------------------------------------


def test_unknown_things_are_404(stack: Stack) -> None:
    _, api_key = stack.new_client(tokens=1)
    unknown = uuid.uuid4().hex

    purchase = stack.http.post(
        f"/v1/clients/{unknown}/purchases",
        json={"purchase_id": "p", "tokens": 1},
        headers=stack.billing,
    )
    subscription = stack.http.put(f"/v1/clients/{unknown}/subscription", headers=stack.billing)
    request = stack.http.get(f"/v1/requests/{unknown}", headers=stack.auth(api_key))
    image = stack.http.get(f"/v1/images/{'0' * 64}.png")

    assert [purchase.status_code, subscription.status_code] == [404, 404]
    assert request.status_code == 404
    assert "remembered 7 days after its deadline" in request.json()["detail"]
    assert image.status_code == 404
    assert stack.balance(api_key) == 1


def test_another_clients_request_is_404(stack: Stack) -> None:
    _, alice = stack.new_client(tokens=1)
    _, bob = stack.new_client(tokens=1)
    request_id = stack.meme(alice).json()["request_id"]

    response = stack.http.get(f"/v1/requests/{request_id}", headers=stack.auth(bob))

    assert response.status_code == 404


# --- 502: the generator fails, the token comes back -------------------------------------


def test_a_query_the_content_policy_blocks_is_422_and_charges_nothing(stack: Stack) -> None:
    _, api_key = stack.new_client(tokens=2)

    response = stack.meme(api_key, query="go kill yourself")

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "content_policy"
    assert body["field"] == "query"
    assert body["reason"].startswith("self_harm")
    account = stack.account(api_key)
    assert account["balance"] == 2
    assert account["memes_requested"] == 0


@pytest.mark.parametrize(
    ("accept", "media_type", "magic"),
    [("image/webp", "image/webp", b"RIFF"), ("image/jpeg", "image/jpeg", b"\xff\xd8\xff")],
)
def test_images_come_as_webp_or_jpeg_by_the_accept_header(
    stack: Stack, accept: str, media_type: str, magic: bytes
) -> None:
    _, api_key = stack.new_client(tokens=1)
    meme = stack.meme(api_key, query="format negotiation").json()

    image = stack.http.get(meme["image_url"], headers={"Accept": accept})

    assert image.status_code == 200
    assert image.headers["content-type"] == media_type
    assert image.headers["vary"] == "Accept"
    assert image.content.startswith(magic)
    again = stack.http.get(
        meme["image_url"], headers={"Accept": accept, "If-None-Match": image.headers["etag"]}
    )
    assert again.status_code == 304


def test_a_failed_generation_is_502_and_refunded(stack: Stack) -> None:
    _, api_key = stack.new_client(tokens=1)

    response = stack.meme(api_key, query=f"please {FAULT_QUERY}")

    assert response.status_code == 502, response.text
    body = response.json()
    assert body["error"] == "generation_failed"
    assert body["refunded"] is True
    assert stack.balance(api_key) == 1
    view = stack.http.get(f"/v1/requests/{body['request_id']}", headers=stack.auth(api_key))
    assert view.json()["status"] == "refunded"


# --- operations -------------------------------------------------------------------------


def test_health_and_readiness(stack: Stack) -> None:
    assert stack.http.get("/healthz").json() == {"status": "ok"}
    ready = stack.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["kafka"] == "ok"


def test_an_idle_connection_outlives_uvicorns_default_keep_alive(stack: Stack) -> None:
    """Scenario: a client (or a load balancer) keeps a connection idle for 6 s, past
    uvicorn's default keep-alive (5 s), then sends on it. We expect: the API has not
    closed it (it keeps idle connections ``api_keep_alive_s``, 75 s), and answers."""
    host, port = stack.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b'{"status":"ok"}'
        time.sleep(6)
        assert conn.sock is not None
        conn.sock.setblocking(False)
        with pytest.raises(BlockingIOError):  # no data and no end of stream: still open
            conn.sock.recv(1, socket.MSG_PEEK)
        conn.sock.settimeout(10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_metrics_count_requests_by_route_template_and_ledger_outcomes(stack: Stack) -> None:
    _, api_key = stack.new_client(tokens=1)
    request_id = stack.meme(api_key).json()["request_id"]
    stack.meme(api_key)  # 402
    stack.http.get(f"/v1/requests/{request_id}", headers=stack.auth(api_key))

    text = stack.http.get("/metrics").text

    assert metric(text, "maas_http_requests_total", route="/memes", method="GET", status="200")
    assert metric(text, "maas_http_requests_total", route="/memes", method="GET", status="402")
    assert metric(text, "maas_http_requests_total", route="/v1/requests/{request_id}")
    assert request_id not in text  # ids never become label values
    assert metric(text, "maas_http_request_duration_seconds_count", route="/memes")
    assert metric(text, "maas_charges_total", kind="standard") >= 1
    assert metric(text, "maas_rejections_total", reason="insufficient_tokens") >= 1


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_openapi_documents_every_route(stack: Stack) -> None:
    paths = stack.http.get("/openapi.json").json()["paths"]
    assert {"/memes", "/v1/me", "/v1/clients", "/v1/images/{key}"} <= set(paths)
    # Every refusal a meme call can get is documented, each as a problem.
    memes = paths["/memes"]["get"]["responses"]
    assert {"401", "402", "409", "422", "429", "502", "503", "504"} <= set(memes)
    assert all("application/problem+json" in memes[code]["content"] for code in ("429", "503"))
    assert stack.http.get("/docs").status_code == 200


def test_a_request_that_is_not_http_gets_the_problem_shape(stack: Stack) -> None:
    """Before, uvicorn answered a raw byte outside ASCII in the URL with its own
    ``text/plain`` "Invalid HTTP request received.", which no client can read as an error."""
    _, api_key = stack.new_client(tokens=1)
    host, port = stack.base_url.removeprefix("http://").split(":")
    request = (
        "GET /memes?lat=1&lon=2&query=caf\u00e9 HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer {api_key}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk

    response = http.client.HTTPResponse(_Replay(answer))  # type: ignore[arg-type]
    response.begin()
    assert response.status == 400
    assert response.getheader("content-type") == "application/problem+json"
    body = json.loads(response.read())
    assert (body["status"], body["error"]) == (400, "malformed_request")
    assert "percent-encoded" in body["detail"]
    assert stack.balance(api_key) == 1


class _Replay:
    """Bytes read back as a socket, for ``http.client`` to parse an answer."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.data)
