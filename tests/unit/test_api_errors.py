"""One error shape at the HTTP edge: every refusal is a problem document that says why.

The app runs in-process without its Kafka clients: each request here is refused before
a route would use them (``bridge`` and ``keys`` are left empty on purpose).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.errors import MAX_BODY_BYTES
from core.settings import Settings

BILLING = {"Authorization": "Bearer test-billing-token"}
AUDITOR = "Bearer test-auditor-token"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(
        Settings(billing_token="test-billing-token", auditor_token="test-auditor-token")
    )
    app.state.bridge = None
    app.state.keys = None
    yield TestClient(app, raise_server_exceptions=False)


def problem(response: Any, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["error"] == error and body["title"], body
    return body


def test_an_unknown_route_is_a_404_problem(client: TestClient) -> None:
    body = problem(client.get("/v1/nothing-here"), 404, "not_found")
    assert body["detail"] == "no route GET /v1/nothing-here"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("POST", "/memes", "GET"), ("OPTIONS", "/v1/clients/c1/subscription", "DELETE, PUT")],
)
def test_a_wrong_method_is_a_405_problem_with_allow(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path)
    problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allow


def test_malformed_json_is_a_400_problem(client: TestClient) -> None:
    response = client.post(
        "/v1/clients", content=b'{"name": ', headers={**BILLING, "Content-Type": "application/json"}
    )
    assert "not valid JSON" in problem(response, 400, "malformed_body")["detail"]


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"purchase_id": "p1", "tokens": 1, "tokens": 1000}', "tokens"),
        (b'{"until": {"a": 1, "a": 2}}', "a"),  # at any depth
    ],
)
def test_a_json_object_that_repeats_a_key_is_a_400_problem(
    client: TestClient, body: bytes, key: str
) -> None:
    """A parser keeps one of the values and drops the rest without a word; which one
    billing meant, nobody knows. Refused before any route, credential check included."""
    response = client.post(
        "/v1/clients/c1/purchases",
        content=body,
        headers={**BILLING, "Content-Type": "application/json"},
    )
    assert problem(response, 400, "malformed_body")["detail"] == f"the body repeats the key {key!r}"


def test_a_body_that_is_not_json_is_a_415_problem(client: TestClient) -> None:
    response = client.post(
        "/v1/clients/c1/purchases",
        content=b"purchase_id=p1&tokens=5",
        headers={**BILLING, "Content-Type": "application/x-www-form-urlencoded"},
    )
    problem(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "streamed"])
def test_an_oversized_body_is_a_413_problem(client: TestClient, announced: bool) -> None:
    payload = b'{"name": "' + b"x" * MAX_BODY_BYTES + b'"}'
    content: Any = payload if announced else iter([payload[:1000], payload[1000:]])
    response = client.post(
        "/v1/clients", content=content, headers={**BILLING, "Content-Type": "application/json"}
    )
    problem(response, 413, "body_too_large")


@pytest.mark.parametrize(
    ("until", "message"),
    [
        ("0481-12-01T03:39:56Z", "1970-01-01T00:00:00Z or later"),
        ("1969-12-31T23:59:59Z", "1970-01-01T00:00:00Z or later"),
        ("10000-01-01T00:00:00Z", ""),  # past what a datetime can hold
        ("2030-01-01T00:00:00", "timezone"),
    ],
)
def test_an_out_of_range_date_is_a_422_naming_the_field(
    client: TestClient, until: str, message: str
) -> None:
    response = client.put("/v1/clients/c1/subscription", json={"until": until}, headers=BILLING)
    fields = problem(response, 422, "invalid_request")["fields"]
    assert [f["field"] for f in fields] == ["until"], fields
    assert message in fields[0]["message"]


@pytest.mark.parametrize("tokens", [2**64, -(2**63) - 1, 10**30, 5.5, "5", True])
def test_an_integer_beyond_64_bits_is_a_422_naming_the_field(
    client: TestClient, tokens: int
) -> None:
    response = client.post(
        "/v1/clients/c1/purchases", json={"purchase_id": "p1", "tokens": tokens}, headers=BILLING
    )
    fields = problem(response, 422, "invalid_request")["fields"]
    assert [f["field"] for f in fields] == ["tokens"], fields


@pytest.mark.parametrize("to", ["0.5", "1700000000", "1969-12-31T00:00:00Z"])
def test_a_query_date_must_be_iso_8601_from_1970(client: TestClient, to: str) -> None:
    response = client.get(
        "/v1/clients/c1/ledger", params={"to": to}, headers={"Authorization": AUDITOR}
    )
    fields = problem(response, 422, "invalid_request")["fields"]
    assert [f["field"] for f in fields] == ["to"], fields


def test_missing_credentials_are_a_401_problem(client: TestClient) -> None:
    response = client.post("/v1/clients", json={})
    problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_openapi_describes_every_error_as_a_problem(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert set(schemes) == {"ApiKey", "BillingToken", "AuditorToken"}
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            if operation.get("security"):
                assert "401" in responses, where
            if operation.get("parameters") or operation.get("requestBody"):
                assert "422" in responses, where
            if operation.get("requestBody"):
                assert {"400", "413", "415"} <= set(responses), where
            for code, response in responses.items():
                if int(code) >= 400:
                    content = response["content"]["application/problem+json"]
                    assert content["schema"] == {"$ref": "#/components/schemas/Problem"}, where


def test_an_image_store_that_does_not_answer_is_a_503_to_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a 500, nor a 404: the image may well be there."""
    pytest.importorskip("boto3")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings(
        billing_token="test-billing-token",
        auditor_token="test-auditor-token",
        blob_store="s3",
        s3_bucket="memes",
        s3_endpoint_url=f"http://127.0.0.1:{port}",
    )
    client = TestClient(create_app(settings), raise_server_exceptions=False)

    for accept in ("image/png", "image/webp"):
        response = client.get(f"/v1/images/{'0' * 64}.png", headers={"Accept": accept})
        problem(response, 503, "image_store_unavailable")
        assert response.headers["retry-after"] == "5"
