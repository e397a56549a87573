"""Scenarios: parts of the region fail while clients keep calling the API.

Each scenario says what breaks, what a client observes, and what must hold after the
region heals: no token is lost, none is spent twice.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer
from prometheus_client.parser import text_string_to_metric_families

from api.routes.memes import SETTLE_SLACK_MS
from core.topics import Topics, key_partition
from maas.processes import start_process
from processors.fatal import FATAL_EXIT_CODE
from processors.generators.worker import MAX_FENCES, membership
from tests.stack import Stack

pytestmark = [pytest.mark.kafka, pytest.mark.scenario]

SETTLE_TIMEOUT_S = 60.0


def wait_for(check: Any, timeout_s: float = SETTLE_TIMEOUT_S, interval_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"not true after {timeout_s} s; last value {last!r}")


def request_status(stack: Stack, api_key: str, request_id: str) -> str | None:
    response = stack.http.get(f"/v1/requests/{request_id}", headers=stack.auth(api_key))
    return response.json()["status"] if response.status_code == 200 else None


def test_processor_down_is_a_504_and_the_token_comes_back(stack: Stack) -> None:
    """Scenario: the ledger processor is killed (-9) while a client asks for a meme.

    We expect: a 504 ``deadline_exceeded`` with the request id, once the deadline plus
    the refund grace has passed with no word from the ledger (plus slack); once the
    processor is back, the request ends refunded, the balance is what it was, and a retry
    with the same Idempotency-Key gets that end.
    """
    _, api_key = stack.new_client(tokens=2)
    deadline_s = stack.settings.request_deadline_ms / 1000
    key = f"fault-{uuid.uuid4().hex}"
    stack.kill("processor")
    try:
        started = time.monotonic()
        response = stack.meme(api_key, idempotency_key=key)
        elapsed_s = time.monotonic() - started
    finally:
        stack.restart("processor")

    assert response.status_code == 504, response.text
    body = response.json()
    assert body["error"] == "deadline_exceeded"
    assert f"/v1/requests/{body['request_id']}" in body["detail"]
    # The API waits for the ledger's word until the deadline plus the refund grace.
    settled_s = deadline_s + stack.settings.refund_grace_ms / 1000 + SETTLE_SLACK_MS / 1000
    assert settled_s - 0.5 <= elapsed_s <= settled_s + 2.0

    wait_for(lambda: request_status(stack, api_key, body["request_id"]) == "refunded")
    assert stack.balance(api_key) == 2

    # Refunded on the deadline, by the processor's timer or by a generator that refused
    # the work past its deadline (judged by that failure's time): 504 either way.
    retry = stack.meme(api_key, idempotency_key=key)
    assert retry.status_code == 504, retry.text
    assert retry.json()["refunded"] is True
    assert retry.json()["request_id"] == body["request_id"]
    assert stack.balance(api_key) == 2


def test_a_retry_of_a_settled_request_is_answered_while_the_ledger_is_down(
    stack: Stack,
) -> None:
    """Scenario: a client got its meme, then the ledger processor is killed (-9) and the
    client retries with the same Idempotency-Key (its answer was lost on the way).

    We expect: the retry is answered at once with the same meme, not after a deadline,
    and costs nothing more; the same key with other parameters is still a 409.
    """
    _, api_key = stack.new_client(tokens=2)
    key = f"settled-{uuid.uuid4().hex}"
    first = stack.meme(api_key, idempotency_key=key)
    assert first.status_code == 200, first.text
    stack.kill("processor")
    try:
        started = time.monotonic()
        retry = stack.meme(api_key, idempotency_key=key)
        elapsed_s = time.monotonic() - started
        conflict = stack.meme(api_key, idempotency_key=key, query="other")
    finally:
        stack.restart("processor")

    assert retry.status_code == 200, retry.text
    assert elapsed_s < 1.0
    assert retry.json()["meme_id"] == first.json()["meme_id"]
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["error"] == "conflict"
    stack.wait_serving()
    assert stack.balance(api_key) == 1


def test_a_killed_generator_pool_serves_again_within_the_deadline(stack: Stack) -> None:
    """Scenario: the standard generator pool is killed (-9) and restarted at once, as
    the supervisor does, and a client asks for a meme right away.

    We expect: a meme within the request's deadline. The restarted pool is the same
    static member of its group, so it takes its partitions straight back instead of
    waiting for the killed one's session to expire.
    """
    _, api_key = stack.new_client(tokens=2)
    assert stack.meme(api_key).status_code == 200
    stack.kill("generator-standard")
    stack.start("generator-standard")

    started = time.monotonic()
    response = stack.meme(api_key)
    elapsed_s = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert elapsed_s < stack.settings.request_deadline_ms / 1000
    assert stack.balance(api_key) == 0


def test_a_fenced_generator_pool_rejoins_in_its_process(stack: Stack) -> None:
    """Scenario: the standard generator pool is fenced as a static member: another
    consumer joins its group with its ``group.instance.id`` (as a lost join of its own
    does in a broker fault, when the coordinator processes it late), then goes away.

    We expect: the pool's process is not restarted (it keeps its loaded place index and
    finished memes): a fresh consumer rejoins the group, leaving no Kafka client of the
    fenced pool behind, and the next meme is served within its deadline.
    """
    _, api_key = stack.new_client(tokens=2)
    assert stack.meme(api_key).status_code == 200
    pool = stack.procs["generator-standard"]
    names_before = _thread_names(pool.pid)
    log_mark = len(stack.tail("generator-standard", lines=100_000))
    _fence_the_standard_pool(stack)
    wait_for(lambda: REJOINED in stack.tail("generator-standard", lines=100_000)[log_mark:])

    started = time.monotonic()
    response = stack.meme(api_key)
    elapsed_s = time.monotonic() - started

    assert pool.poll() is None, stack.tail("generator-standard")
    assert response.status_code == 200, response.text
    assert elapsed_s < stack.settings.request_deadline_ms / 1000
    # Every librdkafka client runs exactly one ``rdk:main`` thread, so a client of the
    # fenced pool left behind shows as one more. Not the count of all threads: a fresh
    # client's broker threads differ from the old one's for a while (its bootstrap
    # connection lives until metadata names the brokers), and under the whole suite's
    # load one thread more was still there after 10 s, then after 30 s (thirtieth and
    # thirty-first sessions), with no client more.
    names_after = _thread_names(pool.pid)
    assert names_after.count("rdk:main") == names_before.count("rdk:main"), (
        Counter(names_after) - Counter(names_before),
        Counter(names_before) - Counter(names_after),
    )


def test_twin_generator_pools_do_not_fence_each_other_for_ever(stack: Stack) -> None:
    """Scenario: a second standard pool is started with the instance id of the first (a
    mistake of configuration): each one's join fences the other.

    We expect: one of them exits with the fatal exit code (71) after its third fence in a
    minute, so the supervisor's crash-loop backoff and its log take over; the other serves.
    """
    pool = stack.procs["generator-standard"]
    twin = start_process(
        "generator-standard",
        stack.env,
        stack.log_dir / "generator-standard-twin.log",
        instance_id=stack.settings.instance_id,
    )
    try:
        wait_for(lambda: pool.poll() is not None or twin.poll() is not None, 90)
        exited, other = (pool, twin) if pool.poll() is not None else (twin, pool)
        assert exited.returncode == FATAL_EXIT_CODE
        assert other.poll() is None
    finally:
        stack.terminate("generator-standard")
        twin.kill()
        twin.wait()
    logs = stack.tail("generator-standard") + stack.tail("generator-standard-twin")
    assert f"consumer fenced {MAX_FENCES} times" in logs
    stack.start("generator-standard")
    _, api_key = stack.new_client(tokens=1)
    assert stack.meme(api_key).status_code == 200


REJOINED = "consumer fenced, rejoining"  # our log line (librdkafka's say "rejoining" too)


def _fence_the_standard_pool(stack: Stack) -> None:
    """Join the standard pools' group with the pool's own static member id, then go away
    (a static member leaves no group on close): the coordinator fences the pool."""
    group, member = membership(stack.settings, "standard")
    intruder = Consumer(
        {
            "bootstrap.servers": stack.settings.bootstrap_servers,
            "group.id": group,
            "group.instance.id": member,
            "session.timeout.ms": 6_000,
            "enable.auto.commit": False,  # it takes no work from the pool
        }
    )

    def joined() -> bool:
        intruder.poll(0.2)
        return bool(intruder.assignment())

    try:
        intruder.subscribe([Topics(stack.settings.region).approved("standard")])
        wait_for(joined, 30, 0)
    finally:
        intruder.close()


def _thread_names(pid: int) -> list[str]:
    """The process's threads by name (each librdkafka client has one ``rdk:main``)."""
    return sorted(
        (task / "comm").read_text().strip() for task in Path(f"/proc/{pid}/task").iterdir()
    )


def test_api_killed_comes_back_knowing_every_key(stack: Stack) -> None:
    """Scenario: the API is killed (-9) and restarted.

    We expect: keys registered before the crash authenticate again (the key table is
    rebuilt from the clients topic), and the new instance receives its replies.
    """
    _, api_key = stack.new_client(tokens=1)
    stack.kill("api")
    stack.restart("api")

    response = stack.meme(api_key)

    assert response.status_code == 200, response.text
    assert stack.balance(api_key) == 0


def test_broker_down_is_a_503_with_retry_after(stack: Stack, kafka: Any) -> None:
    """Scenario: the Kafka broker stops while a client asks for a meme.

    We expect: a 503 ``kafka_unavailable`` with ``Retry-After: 1``, never a hang: the
    append times out at the deadline, and the API then waits for a reply (a timed-out
    append may have reached the log) until the deadline plus the refund grace, or, once
    the API knows that no broker answers, at once; the next call is refused at once;
    ``/readyz`` says Kafka is unreachable (then at once too); once the broker is back,
    the same client gets memes again and was charged for nothing it did not get.
    """
    if kafka.broker is None:
        pytest.skip("the broker is not ours to stop")
    _, api_key = stack.new_client(tokens=2)
    deadline_s = stack.settings.request_deadline_ms / 1000
    kafka.broker.stop()
    try:
        started = time.monotonic()
        response = stack.meme(api_key)
        elapsed_s = time.monotonic() - started
        ready = stack.http.get("/readyz", timeout=15)
        started = time.monotonic()
        refused = stack.meme(api_key)
        refused_s = time.monotonic() - started
        unreachable = sample_value(stack, "maas_kafka_unreachable")
        started = time.monotonic()
        still_not_ready = stack.http.get("/readyz", timeout=15)
        not_ready_s = time.monotonic() - started
    finally:
        kafka.broker.start()

    assert response.status_code == 503, response.text
    assert response.json()["error"] == "kafka_unavailable"
    assert response.headers["retry-after"] == "1"
    settled_s = deadline_s + stack.settings.refund_grace_ms / 1000 + SETTLE_SLACK_MS / 1000
    assert elapsed_s <= settled_s + 2.0
    assert ready.status_code == 503
    assert ready.json()["checks"]["kafka"].startswith("unreachable")
    assert refused.status_code == 503, refused.text
    assert refused.json()["kafka_code"] == "_ALL_BROKERS_DOWN"
    assert refused.headers["retry-after"] == "1"
    assert refused_s < 0.5
    assert unreachable == 1
    assert still_not_ready.status_code == 503 and not_ready_s < 0.5
    assert "no broker answers" in still_not_ready.json()["checks"]["kafka"]

    # The ledger processor may have ended itself, as designed: a transaction that met
    # the broker down lost its coordinator, or hung until its watchdog (the supervisor
    # restarts it; here nobody does). This scenario is about the API (same process
    # throughout): its producer, reply consumer and key table must carry on, so the
    # processor is restarted here, as the supervisor would.
    stack.restart("processor")
    stack.wait_ready()
    wait_for(lambda: stack.meme(api_key).status_code == 200, interval_s=1.0)
    assert sample_value(stack, "maas_kafka_unreachable") == 0
    # The failed call was never appended, or was appended and then refunded or served:
    # either way, charges equal memes delivered.
    account = wait_for(lambda: _settled_account(stack, api_key))
    assert account["balance"] == 2 - account["memes_delivered"]


def _settled_account(stack: Stack, api_key: str) -> dict[str, Any] | None:
    response = stack.http.get("/v1/me", headers=stack.auth(api_key))
    if response.status_code != 200:
        return None
    account = response.json()
    charged = account["tokens_charged"] - account["tokens_refunded"]
    return account if charged == account["memes_delivered"] else None


def test_registration_unconfirmed_by_the_deadline_still_hands_out_the_key(stack: Stack) -> None:
    """Scenario: billing registers a client while the ledger processor is down.

    We expect: the ``ClientRegistered`` event is in the log, so the API answers 202
    with the client id and the key marked ``pending`` (a key shown once must not be
    lost); once the processor is back, that key works.
    """
    stack.kill("processor")
    try:
        response = stack.http.post("/v1/clients", json={"name": "late"}, headers=stack.billing)
    finally:
        stack.restart("processor")

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["pending"] is True
    assert body["api_key"].startswith("mk_")
    account = wait_for(lambda: _account_or_none(stack, body["api_key"]))
    assert account["client_id"] == body["client_id"]
    assert account["balance"] == 0


def _account_or_none(stack: Stack, api_key: str) -> dict[str, Any] | None:
    response = stack.http.get("/v1/me", headers=stack.auth(api_key))
    return response.json() if response.status_code == 200 else None


def test_past_the_in_flight_limit_a_request_is_refused_at_once_and_not_charged(
    stack: Stack,
) -> None:
    """Scenario: the ledger stalls (processor killed) while an API process that keeps at
    most four calls waiting, three for clients of one partition and two for one client,
    gets two of client A, a third of A, one of client C (A's partition), another of C,
    one of client B (another partition), then more.

    We expect: A's third is refused at once with 429 ``too_many_requests`` and
    Retry-After (A holds its own share) while C is still admitted; C's second gets 503
    ``overloaded`` (the partition holds its share) while B is still admitted; then, with
    four waiting, every request is refused with 503, before anything is appended. The
    waiting requests end refunded, and a refused one, retried under the same
    Idempotency-Key once the ledger is back, is charged once. Without a key, a request is
    refused at the edge (``api.shedding``), in the same words and counted the same way,
    before it is validated: even one with a bad ``lat``.
    """
    client_id, api_key = stack.new_client(tokens=5)
    same_key = _client_on_a_partition(stack, client_id, same=True, tokens=5)
    other_key = _client_on_a_partition(stack, client_id, same=False, tokens=5)
    limits = {
        "MAAS_API_MAX_IN_FLIGHT": "4",
        "MAAS_API_MAX_IN_FLIGHT_PER_PARTITION": "3",
        "MAAS_API_MAX_IN_FLIGHT_PER_CLIENT": "2",
    }
    stack.env.update(limits)
    stack.restart("api")
    stack.kill("processor")
    refused_key = f"refused-{uuid.uuid4().hex}"
    try:
        with two_waiting(stack, api_key, "maas_ledger_calls_waiting") as waiting:
            assert_refused_at_once(stack, api_key, refused_key, status=429)
            with ThreadPoolExecutor(2) as pool:
                same = pool.submit(stack.meme, same_key, idempotency_key=uuid.uuid4().hex)
                wait_for_waiting(stack, 3)
                assert_refused_at_once(stack, same_key, uuid.uuid4().hex)
                other = pool.submit(stack.meme, other_key, idempotency_key=uuid.uuid4().hex)
                wait_for_waiting(stack, 4)
                assert_refused_at_once(stack, other_key, uuid.uuid4().hex)
                assert_refused_at_once(stack, api_key)
                assert_refused_at_once(stack, api_key, lat=91)
                counted = {
                    limit: sample_value(stack, "maas_overloaded_total", limit=limit)
                    for limit in ("client", "partition", "all")
                }
                shown = {
                    status: sample_value(
                        stack,
                        "maas_http_requests_total",
                        route="/memes",
                        method="GET",
                        status=status,
                    )
                    for status in ("429", "503")
                }
                answers = [w.result() for w in [*waiting, same, other]]
    finally:
        stack.restart("processor")
        for name in limits:
            del stack.env[name]
        stack.restart("api")

    assert [a.status_code for a in answers] == [504] * 4, [a.text for a in answers]
    assert counted == {"client": 1, "partition": 1, "all": 3}
    assert shown == {"429": 1, "503": 4}
    wait_for(lambda: [stack.balance(k) for k in (api_key, same_key, other_key)] == [5, 5, 5])

    retry = stack.meme(api_key, idempotency_key=refused_key)
    assert retry.status_code == 200, retry.text
    assert stack.balance(api_key) == 4
    assert stack.account(api_key)["client_id"] == client_id


def _client_on_a_partition(stack: Stack, client_id: str, *, same: bool, tokens: int) -> str:
    """The API key of a new client whose records are on ``client_id``'s partition
    (``same``) or on another."""
    partitions = stack.settings.partitions
    taken = key_partition(client_id.encode(), partitions)
    while True:
        new_id, new_key = stack.new_client(tokens=tokens)
        if (key_partition(new_id.encode(), partitions) == taken) == same:
            return new_key


def wait_for_waiting(stack: Stack, calls: int) -> None:
    wait_for(
        lambda: sample_value(stack, "maas_ledger_calls_waiting") == calls,
        timeout_s=10,
        interval_s=0.05,
    )


def test_past_the_ai_limit_an_ai_meme_is_refused_at_once_while_standard_memes_go_on(
    stack: Stack,
) -> None:
    """Scenario: the AI pool is killed (-9) while an API process that keeps at most two AI
    memes waiting gets a third AI request, and a standard one.

    We expect: the third AI request is refused at once with 503 ``overloaded`` and
    Retry-After, before anything is appended (its balance is untouched); the standard
    request is served meanwhile; the two waiting AI requests end refunded.
    """
    ai_id, ai_key = stack.new_client(tokens=5)
    _, standard_key = stack.new_client(tokens=5)
    stack.env["MAAS_API_MAX_AI_IN_FLIGHT"] = "2"
    stack.restart("api")
    # Switched on through this API process, which learns the client is AI from the answer.
    on = stack.http.put(f"/v1/clients/{ai_id}/subscription", headers=stack.billing)
    assert on.status_code == 200 and on.json()["ai_active"] is True, on.text
    stack.kill("generator-ai")
    try:
        with two_waiting(stack, ai_key, "maas_ai_memes_waiting") as waiting:
            assert_refused_at_once(stack, ai_key, f"refused-{uuid.uuid4().hex}")
            standard = stack.meme(standard_key)
            answers = [w.result() for w in waiting]
    finally:
        stack.restart("generator-ai")
        del stack.env["MAAS_API_MAX_AI_IN_FLIGHT"]
        stack.restart("api")

    assert standard.status_code == 200, standard.text
    assert standard.json()["kind"] == "standard"
    assert [a.status_code for a in answers] == [504, 504], [a.text for a in answers]
    wait_for(lambda: stack.balance(ai_key) == 5)
    assert stack.balance(standard_key) == 4


@contextmanager
def two_waiting(stack: Stack, api_key: str, gauge: str) -> Iterator[list[Future[httpx.Response]]]:
    """Two keyed meme requests of the client, once the API's ``gauge`` counts both."""
    with ThreadPoolExecutor(2) as pool:
        waiting = [
            pool.submit(stack.meme, api_key, idempotency_key=f"w{n}-{uuid.uuid4().hex}")
            for n in range(2)
        ]
        wait_for(lambda: sample_value(stack, gauge) == 2, timeout_s=10, interval_s=0.05)
        yield waiting


def assert_refused_at_once(
    stack: Stack,
    api_key: str,
    idempotency_key: str | None = None,
    status: int = 503,
    **params: Any,
) -> None:
    started = time.monotonic()
    if idempotency_key is not None:
        params["idempotency_key"] = idempotency_key
    refused = stack.meme(api_key, **params)
    assert time.monotonic() - started < 1.0
    assert refused.status_code == status, refused.text
    assert refused.json()["error"] == {429: "too_many_requests", 503: "overloaded"}[status]
    assert refused.headers["Retry-After"] == "1"


def sample_value(stack: Stack, name: str, **labels: str) -> int:
    """The sample of the API's /metrics with these labels (0 if none yet)."""
    for family in text_string_to_metric_families(stack.http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return int(sample.value)
    return 0
