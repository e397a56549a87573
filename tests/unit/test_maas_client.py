"""The published client's own logic: problem bodies to typed errors, backoff, and what
is retried at the HTTP edge.

The service is not the code under test here: ``httpx.MockTransport`` stands in for it
only to script status codes and headers; the money rules are tested against the real
service in ``tests/integration/test_maas_client.py``.
"""

from __future__ import annotations

import ast
import json
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

import maas_client
from maas_client import (
    AlreadyRegistered,
    BadRequest,
    BillingClient,
    Conflict,
    DeadlineExceeded,
    GenerationFailed,
    InsufficientTokens,
    InvalidRequest,
    MaasError,
    Meme,
    MemesClient,
    NotFound,
    RegisteredClient,
    RequestInProgress,
    RetryPolicy,
    RotatedKey,
    ServerError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from maas_client.errors import error_for
from maas_client.retry import parse_retry_after

BASE_URL = "http://maas.test"
MEME = {
    "request_id": "r1",
    "meme_id": "m1",
    "caption": "when the train is late",
    "template": "drake",
    "kind": "standard",
    "image_url": "/v1/images/" + "a" * 64 + ".png",
    "tokens_charged": 1,
    "balance_after": 9,
}
# No waiting between attempts unless a test says otherwise.
NO_DELAY = RetryPolicy(max_attempts=5, base_delay_s=0.0, max_delay_s=0.0, budget_s=60.0)


def problem(status: int, error: str, **fields: Any) -> dict[str, Any]:
    return {"type": "about:blank", "title": "t", "status": status, "error": error, **fields}


# --- problem body -> typed error -------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "malformed_body", BadRequest),
        (400, "malformed_request", BadRequest),
        (401, "unauthorized", Unauthorized),
        (402, "insufficient_tokens", InsufficientTokens),
        (404, "not_found", NotFound),
        (405, "method_not_allowed", BadRequest),
        (409, "conflict", Conflict),
        (409, "request_in_progress", RequestInProgress),
        (409, "already_registered", AlreadyRegistered),
        (413, "body_too_large", BadRequest),
        (415, "unsupported_media_type", BadRequest),
        (422, "invalid_request", InvalidRequest),
        (429, "too_many_requests", TooManyRequests),
        (500, "internal_error", ServerError),
        (502, "generation_failed", GenerationFailed),
        (503, "kafka_unavailable", Unavailable),
        (503, "not_ready", Unavailable),
        (503, "overloaded", Unavailable),
        (504, "deadline_exceeded", DeadlineExceeded),
    ],
)
def test_each_documented_error_code_has_its_class(
    status: int, code: str, cls: type[MaasError]
) -> None:
    body = problem(status, code, detail="why")
    error = error_for(status, body)
    assert type(error) is cls
    assert (error.status, error.error, error.detail, error.problem) == (status, code, "why", body)
    assert str(error) == f"{status} {code}: why"


def test_the_error_fields_are_typed() -> None:
    tokens = error_for(402, problem(402, "insufficient_tokens", balance=0))
    assert isinstance(tokens, InsufficientTokens) and tokens.balance == 0
    invalid = error_for(
        422, problem(422, "invalid_request", fields=[{"field": "lat", "message": "<= 90"}])
    )
    assert isinstance(invalid, InvalidRequest)
    assert [(f.field, f.message) for f in invalid.fields] == [("lat", "<= 90")]
    busy = error_for(409, problem(409, "request_in_progress", request_id="r1"), 2.0)
    assert isinstance(busy, RequestInProgress)
    assert (busy.request_id, busy.retry_after_s) == ("r1", 2.0)
    down = error_for(503, problem(503, "kafka_unavailable", request_id="r2"), 1.0)
    assert isinstance(down, Unavailable)
    assert (down.request_id, down.retry_after_s) == ("r2", 1.0)
    late = error_for(504, problem(504, "deadline_exceeded", request_id="r3"))
    assert isinstance(late, DeadlineExceeded) and late.request_id == "r3"


def test_a_field_of_the_wrong_type_reads_as_absent() -> None:
    tokens = error_for(402, problem(402, "insufficient_tokens", balance="0"))
    assert isinstance(tokens, InsufficientTokens) and tokens.balance is None
    invalid = error_for(422, problem(422, "invalid_request", fields="lat"))
    assert isinstance(invalid, InvalidRequest) and invalid.fields == ()


def test_without_a_problem_body_the_status_decides() -> None:
    proxy = error_for(502, {})
    assert type(proxy) is ServerError and proxy.error == "bad_gateway"
    assert type(error_for(503, {})) is Unavailable
    # A code this client does not know yet: the status still gives the family.
    assert type(error_for(503, problem(503, "brand_new"))) is Unavailable
    limited = error_for(429, {})
    assert type(limited) is TooManyRequests and limited.error == "too_many_requests"
    teapot = error_for(418, {})
    assert type(teapot) is MaasError and teapot.error == "im_a_teapot"


# --- backoff ---------------------------------------------------------------------------


def test_backoff_grows_exponentially_under_its_cap_with_full_jitter() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay_s=1.0, max_delay_s=5.0, budget_s=1e9)
    for failed, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        delays = [policy.delay_s(failed, 0.0, None, random.Random(seed)) for seed in range(200)]
        assert all(d is not None and 0.0 <= d <= ceiling for d in delays)
        # Full jitter spreads over the whole range, not around the ceiling.
        assert min(d for d in delays if d is not None) < ceiling / 4


def test_backoff_waits_at_least_retry_after() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay_s=0.5, max_delay_s=5.0, budget_s=60.0)
    for seed in range(100):
        delay = policy.delay_s(1, 0.0, 3.0, random.Random(seed))
        assert delay is not None and 3.0 <= delay <= 3.5


def test_backoff_gives_up_at_max_attempts_and_at_the_budget() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay_s=0.5, max_delay_s=5.0, budget_s=10.0)
    rng = random.Random(1)
    assert policy.delay_s(2, 0.0, None, rng) is not None
    assert policy.delay_s(3, 0.0, None, rng) is None
    assert policy.delay_s(1, 9.9, 0.5, rng) is None
    # A Retry-After beyond the budget is not waited for: the caller gets the error now.
    assert policy.delay_s(1, 0.0, 30.0, rng) is None


def test_a_policy_that_cannot_work_is_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay_s=2.0, max_delay_s=1.0)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now_s = 1_800_000_000.0
    assert parse_retry_after("7", now_s) == 7.0
    assert parse_retry_after(formatdate(now_s + 30, usegmt=True), now_s) == 30.0
    assert parse_retry_after(formatdate(now_s - 30, usegmt=True), now_s) == 0.0
    assert parse_retry_after(None, now_s) is None
    assert parse_retry_after("soon", now_s) is None
    assert parse_retry_after("-1", now_s) is None


# --- models ------------------------------------------------------------------------------


def test_a_count_that_is_not_an_integer_is_refused() -> None:
    assert Meme.from_json(MEME).balance_after == 9
    for wrong in (9.0, "9", True):
        with pytest.raises(TypeError):
            Meme.from_json({**MEME, "balance_after": wrong})


def test_the_api_key_stays_out_of_repr() -> None:
    registered = RegisteredClient(client_id="c1", api_key="mk_secret")
    assert "mk_secret" not in repr(registered)


# --- at the HTTP edge --------------------------------------------------------------------


class Script:
    """Answers each request with the next scripted answer and keeps what was sent."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.sent: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def answer(status: int, body: dict[str, Any], **headers: str) -> httpx.Response:
    media_type = "application/problem+json" if status >= 400 else "application/json"
    return httpx.Response(status, json=body, headers={"Content-Type": media_type, **headers})


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The waits between attempts, recorded instead of slept."""
    waited: list[float] = []
    monkeypatch.setattr(maas_client.client.time, "sleep", waited.append)
    yield waited


def memes(script: Script, retry: RetryPolicy = NO_DELAY) -> MemesClient:
    http = httpx.Client(transport=httpx.MockTransport(script))
    return MemesClient(BASE_URL, "mk_test", retry=retry, http=http)


def billing(script: Script, retry: RetryPolicy = NO_DELAY) -> BillingClient:
    http = httpx.Client(transport=httpx.MockTransport(script))
    return BillingClient(BASE_URL, "billing", retry=retry, http=http)


def test_a_meme_retry_after_a_503_waits_and_sends_the_same_key(sleeps: list[float]) -> None:
    script = Script(
        answer(503, problem(503, "kafka_unavailable", request_id="r1"), **{"Retry-After": "2"}),
        answer(409, problem(409, "request_in_progress", request_id="r1"), **{"Retry-After": "1"}),
        answer(429, problem(429, "too_many_requests"), **{"Retry-After": "3"}),
        answer(504, problem(504, "deadline_exceeded", request_id="r1")),
        answer(200, MEME),
    )
    meme = memes(script).meme(40.73, -73.93, "food")

    assert meme == Meme.from_json(MEME)
    keys = {request.headers["Idempotency-Key"] for request in script.sent}
    assert len(script.sent) == 5 and len(keys) == 1 and keys != {""}
    assert sleeps[0] >= 2 and sleeps[1] >= 1 and sleeps[2] >= 3
    first = script.sent[0]
    assert first.headers["Authorization"] == "Bearer mk_test"
    assert dict(first.url.params) == {"lat": "40.73", "lon": "-73.93", "query": "food"}


def test_the_callers_key_is_sent_and_kept_on_the_error() -> None:
    script = Script(answer(402, problem(402, "insufficient_tokens", balance=0)))
    with pytest.raises(InsufficientTokens) as raised:
        memes(script).meme(1.0, 2.0, "cats", idempotency_key="order-7")
    assert script.sent[0].headers["Idempotency-Key"] == "order-7"
    assert raised.value.idempotency_key == "order-7"
    assert raised.value.balance == 0


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, "unauthorized"),
        (402, "insufficient_tokens"),
        (409, "conflict"),
        (422, "invalid_request"),
        (500, "internal_error"),
        (502, "generation_failed"),
    ],
)
def test_other_errors_are_never_retried(status: int, code: str) -> None:
    script = Script(answer(status, problem(status, code)))
    with pytest.raises(MaasError) as raised:
        memes(script).meme(1.0, 2.0, "cats")
    assert (raised.value.status, raised.value.error) == (status, code)
    assert len(script.sent) == 1


def test_retries_stop_at_max_attempts_with_the_typed_error(sleeps: list[float]) -> None:
    down = answer(503, problem(503, "kafka_unavailable", request_id="r9"), **{"Retry-After": "1"})
    script = Script(*[down] * 3)
    client = memes(script, RetryPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0))
    with pytest.raises(Unavailable) as raised:
        client.meme(1.0, 2.0, "cats")
    assert len(script.sent) == 3 and len(sleeps) == 2
    assert (raised.value.request_id, raised.value.retry_after_s) == ("r9", 1.0)
    assert raised.value.idempotency_key == script.sent[0].headers["Idempotency-Key"]


def test_a_retry_after_beyond_the_budget_is_not_waited_for(sleeps: list[float]) -> None:
    script = Script(answer(503, problem(503, "not_ready"), **{"Retry-After": "120"}))
    with pytest.raises(Unavailable):
        memes(script, RetryPolicy(budget_s=30.0)).me()
    assert len(script.sent) == 1 and sleeps == []


def test_a_lost_answer_is_retried_when_the_call_is_idempotent(sleeps: list[float]) -> None:
    script = Script(httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("cut"), answer(200, MEME))
    assert memes(script).meme(1.0, 2.0, "cats").meme_id == "m1"
    assert len(script.sent) == 3


def test_no_answer_at_all_is_unreachable(sleeps: list[float]) -> None:
    script = Script(*[httpx.ConnectError("refused")] * 2)
    client = memes(script, RetryPolicy(max_attempts=2, base_delay_s=0.0, max_delay_s=0.0))
    with pytest.raises(Unreachable) as raised:
        client.me()
    assert raised.value.status is None and not raised.value.request_sent
    assert isinstance(raised.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize(
    "failure",
    [
        answer(504, problem(504, "deadline_exceeded")),
        answer(503, problem(503, "kafka_unavailable"), **{"Retry-After": "1"}),
        httpx.ReadTimeout("slow"),
    ],
    ids=["504", "503-kafka", "read-timeout"],
)
def test_register_is_not_retried_when_it_may_have_registered(
    failure: httpx.Response | Exception, sleeps: list[float]
) -> None:
    script = Script(failure, answer(201, {"client_id": "c2", "api_key": "mk_2"}))
    with pytest.raises(MaasError):
        billing(script).register("demo")
    assert len(script.sent) == 1


def test_register_is_retried_when_nothing_was_registered(sleeps: list[float]) -> None:
    script = Script(
        httpx.ConnectError("refused"),
        answer(503, problem(503, "not_ready"), **{"Retry-After": "1"}),
        answer(503, problem(503, "overloaded"), **{"Retry-After": "1"}),
        answer(429, problem(429, "too_many_requests"), **{"Retry-After": "1"}),
        answer(202, {"client_id": "c1", "api_key": "mk_1", "pending": True}),
    )
    registered = billing(script).register("demo")
    assert registered == RegisteredClient(client_id="c1", api_key="mk_1", pending=True)
    assert len(script.sent) == 5


def test_a_rotation_sends_its_grace_and_reads_until_when_the_old_key_works(
    sleeps: list[float],
) -> None:
    until = "2026-12-08T04:00:00Z"
    script = Script(
        answer(201, {"client_id": "c1", "api_key": "mk_2", "old_key_valid_until": until}),
        answer(201, {"client_id": "c1", "api_key": "mk_3", "old_key_valid_until": None}),
    )
    client = billing(script)

    graced = client.rotate_api_key("c1", old_key_valid_for_s=3600)
    leaked = client.rotate_api_key("c1")

    assert graced == RotatedKey(
        client_id="c1", api_key="mk_2", old_key_valid_until=datetime(2026, 12, 8, 4, tzinfo=UTC)
    )
    assert (leaked.api_key, leaked.old_key_valid_until) == ("mk_3", None)
    assert [json.loads(r.content) for r in script.sent] == [
        {"old_key_valid_for_s": 3600},
        {"old_key_valid_for_s": 0},
    ]


def test_register_with_a_key_is_retried_with_it_and_a_repeat_names_the_client(
    sleeps: list[float],
) -> None:
    script = Script(
        answer(504, problem(504, "deadline_exceeded")),
        httpx.ReadTimeout("slow"),
        answer(409, problem(409, "already_registered", client_id="c1")),
    )
    with pytest.raises(AlreadyRegistered) as raised:
        billing(script).register("demo", idempotency_key="customer-7")
    assert raised.value.client_id == "c1"
    assert [r.headers["Idempotency-Key"] for r in script.sent] == ["customer-7"] * 3


def test_a_repeated_purchase_is_retried_and_reported_as_a_repeat(sleeps: list[float]) -> None:
    credited = {"purchase_id": "p1", "tokens": 5, "balance_after": 5, "seq": 2}
    script = Script(answer(504, problem(504, "deadline_exceeded")), answer(200, credited))
    result = billing(script).purchase("c 1/x", 5, "p1")
    assert result.repeat and result.balance_after == 5
    assert {r.url.raw_path for r in script.sent} == {b"/v1/clients/c%201%2Fx/purchases"}


def test_an_answer_off_the_contract_is_a_maas_error() -> None:
    script = Script(answer(200, {**MEME, "balance_after": 1.5}), httpx.Response(200, text="<html>"))
    client = memes(script)
    for _ in range(2):
        with pytest.raises(MaasError) as raised:
            client.meme(1.0, 2.0, "cats")
        assert raised.value.error == "unexpected_response"


def test_only_an_http_client_it_made_is_closed() -> None:
    theirs = httpx.Client(transport=httpx.MockTransport(Script()))
    with MemesClient(BASE_URL, "mk_test", http=theirs):
        pass
    assert not theirs.is_closed
    with MemesClient(BASE_URL, "mk_test") as own:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        own.me()


# --- what it depends on ------------------------------------------------------------------


def test_the_package_imports_only_httpx_and_the_standard_library() -> None:
    package = Path(maas_client.__file__).parent
    allowed = {"httpx", "maas_client", "__future__", *sys.stdlib_module_names}
    wrong = []
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            wrong += [f"{path.name}: {n}" for n in names if n.split(".")[0] not in allowed]
    assert not wrong, wrong
