"""Erasing a client's personal data on a real region (``docs/data-retention.md``).

Scenario: a client gets three memes (one with an Idempotency-Key) and one generator
failure; another client gets a meme. Billing erases the first client's personal data.
We expect:
- the answer counts the records read and erased and the images deleted, and a repeat
  erases nothing more;
- the client's balance and usage are untouched; the ledger's hash chains still verify,
  and the client's ledger ends with a balance-neutral ``PersonalDataErased`` entry;
- no ledger entry holds a caption; the latest version of every request record of the
  client in the changelog topic holds none either; the images are gone (404);
- a repeat of the keyed request still answers its first meme, without caption, and
  charges nothing; the other client keeps its caption and image;
- unknown clients, missing tokens and malformed ids get their specific error.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from core.topic_reader import read_topic
from core.topics import Topics
from tests.integration.test_audit import audit
from tests.stack import FAULT_QUERY, Stack

pytestmark = [pytest.mark.kafka, pytest.mark.shared_region]


def erase(stack: Stack, client_id: str, headers: dict[str, str] | None = None) -> Any:
    return stack.http.delete(
        f"/v1/clients/{client_id}/personal-data",
        headers=stack.billing if headers is None else headers,
    )


def latest_records(stack: Stack, client_id: str) -> dict[str, dict[str, Any]]:
    """The latest version of each of the client's request records in the changelog."""
    prefix = f"r/{client_id}/".encode()
    latest: dict[str, dict[str, Any]] = {}
    for msg in read_topic(stack.settings, Topics(stack.settings.region).ledger_changelog):
        key, value = msg.key(), msg.value()
        if key is not None and key.startswith(prefix) and value is not None:
            latest[key.decode()] = json.loads(value)
    return latest


@pytest.fixture(scope="module")
def history(stack: Stack) -> dict[str, Any]:
    alice, alice_key = stack.new_client(tokens=5)
    _, bob_key = stack.new_client(tokens=1)
    keyed = f"erase-{uuid.uuid4().hex}"
    memes = [
        stack.meme(alice_key, query=f"erase me {n}", idempotency_key=f"{keyed}-{n}")
        for n in range(3)
    ]
    assert [m.status_code for m in memes] == [200, 200, 200], [m.text for m in memes]
    assert stack.meme(alice_key, query=FAULT_QUERY).status_code == 502  # refunded
    bob_meme = stack.meme(bob_key, query="keep me").json()
    return {
        "alice": alice,
        "alice_key": alice_key,
        "alice_memes": [m.json() for m in memes],
        "keyed": f"{keyed}-0",
        "bob_key": bob_key,
        "bob_meme": bob_meme,
        "account_before": stack.account(alice_key),
        "records_before": latest_records(stack, alice),
    }


@pytest.fixture(scope="module")
def erased(stack: Stack, history: dict[str, Any]) -> dict[str, Any]:
    response = erase(stack, history["alice"])
    assert response.status_code == 200, response.text
    return response.json()


def test_before_erasure_the_caption_is_in_the_request_record(history: dict[str, Any]) -> None:
    captions = {r["caption"] for r in history["records_before"].values()}
    assert {m["caption"] for m in history["alice_memes"]} <= captions


def test_the_answer_says_what_was_erased(erased: dict[str, Any], history: dict[str, Any]) -> None:
    assert erased == {
        "client_id": history["alice"],
        "requests_seen": 4,  # three delivered, one refunded
        "requests_erased": 3,
        "images_deleted": 3,
        "in_flight": 0,
        "complete": True,
    }


def test_balances_stay_and_the_chains_still_verify(
    stack: Stack, erased: dict[str, Any], history: dict[str, Any]
) -> None:
    before = history["account_before"]
    assert stack.account(history["alice_key"]) == {**before, "seq": before["seq"] + 1}
    code, findings, out = audit(stack, "verify")
    assert code == 0 and findings == [], out

    ledger = stack.http.get(f"/v1/clients/{history['alice']}/ledger", headers=stack.auditor)
    entries = ledger.json()["entries"]
    last = entries[-1]
    assert last["type"] == "PersonalDataErased"
    assert (last["requests_erased"], last["balance_after"]) == (3, entries[-2]["balance_after"])


def test_no_caption_is_left_in_the_ledger_or_the_changelog(
    stack: Stack, erased: dict[str, Any], history: dict[str, Any]
) -> None:
    ledger = stack.http.get(f"/v1/clients/{history['alice']}/ledger", headers=stack.auditor)
    delivered = [e for e in ledger.json()["entries"] if e["type"] == "MemeDelivered"]
    assert len(delivered) == 3
    assert all(e["caption"] is None for e in delivered)

    records = latest_records(stack, history["alice"])
    assert set(records) == set(history["records_before"])
    assert all(r["caption"] is None for r in records.values())


def test_images_are_gone_and_a_repeat_answers_without_caption_or_charge(
    stack: Stack, erased: dict[str, Any], history: dict[str, Any]
) -> None:
    for meme in history["alice_memes"]:
        assert stack.http.get(meme["image_url"]).status_code == 404
    first = history["alice_memes"][0]

    again = stack.meme(history["alice_key"], query="erase me 0", idempotency_key=history["keyed"])

    assert again.status_code == 200, again.text
    assert (again.json()["meme_id"], again.json()["caption"]) == (first["meme_id"], None)
    view = stack.http.get(
        f"/v1/requests/{first['request_id']}", headers=stack.auth(history["alice_key"])
    ).json()
    assert (view["status"], view["caption"]) == ("delivered", None)
    assert stack.balance(history["alice_key"]) == history["account_before"]["balance"]


def test_another_client_keeps_its_caption_and_image(
    stack: Stack, erased: dict[str, Any], history: dict[str, Any]
) -> None:
    bob_meme = history["bob_meme"]
    view = stack.http.get(
        f"/v1/requests/{bob_meme['request_id']}", headers=stack.auth(history["bob_key"])
    ).json()
    assert view["caption"] == bob_meme["caption"]
    assert stack.http.get(bob_meme["image_url"]).status_code == 200


def test_a_repeat_erases_nothing_more(
    stack: Stack, erased: dict[str, Any], history: dict[str, Any]
) -> None:
    again = erase(stack, history["alice"])
    assert again.status_code == 200, again.text
    assert (again.json()["requests_erased"], again.json()["images_deleted"]) == (0, 0)
    ledger = stack.http.get(f"/v1/clients/{history['alice']}/ledger", headers=stack.auditor)
    assert sum(e["type"] == "PersonalDataErased" for e in ledger.json()["entries"]) == 1


def test_bad_erasure_requests_get_their_specific_error(stack: Stack) -> None:
    unknown = erase(stack, f"nobody-{uuid.uuid4().hex}")
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["detail"] == "unknown client"

    assert erase(stack, "someone", headers={}).status_code == 401
    assert erase(stack, "someone", headers={"Authorization": "Bearer wrong"}).status_code == 401

    malformed = erase(stack, "not a valid id!")
    assert malformed.status_code == 422, malformed.text
    assert "client_id" in [f["field"] for f in malformed.json()["fields"]]
