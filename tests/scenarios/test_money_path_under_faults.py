"""Scenario: the money path under load, crashes, a broker restart and client retries.

Given a region with 120 clients, each credited a few tokens (some too few, so that
402s happen), 16 HTTP clients send at least 5,000 ``GET /memes`` requests, each with an
``Idempotency-Key``; a client retries the same key after a 503, a 504 or a broken
connection, as a careful client would. Purchases are interleaved, and every tenth one is
sent twice (a duplicate delivery from billing).

While the load runs, a chaos thread:

- kills the ledger processor with SIGKILL five times, at random moments, and restarts it;
- kills the standard generator pool with SIGKILL once, and restarts it;
- stops the Kafka broker and starts it again once (with the local broker only).

A supervisor thread restarts any process that exits by itself (a fatal Kafka error
makes the processor exit on purpose).

We expect, once every request has ended:

1. every request id the load issued and the API acknowledged has exactly one final
   outcome in the ledger: delivered, rejected or refunded; none is still open;
2. a 200 was a delivery in the ledger with the same meme; a 402 a rejection; a 502 a
   refund; a 504 ended refunded or delivered (the meme may be made at the last moment);
3. per client: tokens charged - tokens refunded == memes delivered, and credited -
   charged + refunded == balance;
4. no balance was ever below zero: every entry's ``balance_after`` is checked by the
   replay's fold, which rejects a negative balance or a seq gap;
5. the balances rebuilt by replaying the ledger topic from offset 0 equal the live ones
   the API reports (``GET /v1/me``);
6. no acknowledged event is missing: every purchase answered 2xx is credited exactly
   once, every request answered 200/402/502 is in the ledger.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from api.routes.memes import request_id_for
from core.topic_reader import read_topic
from ledger.replay import Replay
from schemas.events import MemeDelivered, TokensCredited, parse_entry

pytestmark = [pytest.mark.kafka, pytest.mark.scenario]

CLIENTS = 120
REQUESTS = 5_000
WORKERS = 16
PROCESSOR_KILLS = 5
RETRY_STATUSES = {503, 504}
MAX_ATTEMPTS = 40
SEED = random.randrange(1 << 30)


@dataclass
class Client:
    client_id: str
    api_key: str
    credited_acknowledged: int = 0
    purchase_ids: set[str] = field(default_factory=set)


@dataclass
class Outcomes:
    """What the HTTP clients were told, per request id (the last final answer)."""

    status: dict[str, int] = field(default_factory=dict)
    meme_id: dict[str, str] = field(default_factory=dict)
    retries: int = 0
    gave_up: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def test_no_double_charge_no_loss_under_faults(stack: Any, kafka: Any) -> None:
    rng = random.Random(SEED)
    print(f"scenario seed={SEED}")
    clients = [_register(stack, rng) for _ in range(CLIENTS)]
    outcomes = Outcomes()
    stop = threading.Event()
    faults = Counter[str]()
    sent = Counter[str]()

    procs_lock = threading.Lock()  # a kill-and-restart by the chaos thread is one step
    supervisor = threading.Thread(target=_supervise, args=(stack, stop, procs_lock), daemon=True)
    supervisor.start()
    chaos = threading.Thread(
        target=_chaos, args=(stack, kafka, rng, stop, faults, sent, procs_lock), daemon=True
    )
    chaos.start()
    per_worker = REQUESTS // WORKERS + 1
    workers = [
        threading.Thread(
            target=_load, args=(stack, clients, outcomes, random.Random(SEED + i), per_worker, sent)
        )
        for i in range(WORKERS)
    ]
    started = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    load_s = time.monotonic() - started
    stop.set()
    chaos.join()
    supervisor.join()
    print(
        f"load done requests={sent['memes']} seconds={load_s:.1f} retries={outcomes.retries} "
        f"faults={dict(faults)} statuses={Counter(outcomes.status.values())}"
    )

    assert sent["memes"] >= REQUESTS
    assert faults["processor_kill"] >= PROCESSOR_KILLS
    assert faults["generator_kill"] == 1
    if kafka.broker is not None:
        assert faults["broker_restart"] == 1
    assert not outcomes.gave_up, f"clients gave up on {len(outcomes.gave_up)} requests"

    replay = _wait_until_all_ended(stack)
    entries = replay.entries
    assert entries > 0
    # The API derives request ids from the client and its key: unique across clients.
    ended_as = {request_id: status for (_, request_id), status in replay.requests.items()}

    # 1. and 4.: the fold accepted every entry and every request has one final outcome.
    assert replay.violations == []
    assert replay.open_requests() == set()
    for request_id in outcomes.status:
        assert request_id in ended_as, f"acknowledged request {request_id} missing"

    # 2. what each client was told matches the ledger.
    delivered = _delivered_memes(stack)
    for request_id, status in outcomes.status.items():
        ended = ended_as[request_id]
        match status:
            case 200:
                assert ended == "delivered"
                assert delivered[request_id] == outcomes.meme_id[request_id]
            case 402:
                assert ended == "rejected"
            case 502:
                assert ended == "refunded"
            case 504:
                assert ended in ("refunded", "delivered")
            case _:
                pytest.fail(f"request {request_id} ended with HTTP {status}")

    # 3. conservation per client.
    assert replay.conservation() == []
    for account in replay.accounts.values():
        assert account.tokens_charged - account.tokens_refunded == account.memes_delivered

    # 5. replay == live, and 6. every acknowledged purchase credited exactly once.
    credits = _credits(stack)
    for client in clients:
        live = stack.account(client.api_key)
        rebuilt = replay.accounts[client.client_id]
        assert live["balance"] == rebuilt.balance >= 0
        assert live["tokens_charged"] == rebuilt.tokens_charged
        assert live["tokens_refunded"] == rebuilt.tokens_refunded
        assert live["memes_delivered"] == rebuilt.memes_delivered
        for purchase_id in client.purchase_ids:
            assert credits[(client.client_id, purchase_id)] == 1, purchase_id
        assert rebuilt.tokens_credited == client.credited_acknowledged
    print(f"checked entries={entries} clients={len(clients)} requests={len(outcomes.status)}")


# --- load ---------------------------------------------------------------------------


def _register(stack: Any, rng: random.Random) -> Client:
    client_id, api_key = stack.new_client()
    client = Client(client_id, api_key)
    _purchase(stack, client, rng.randint(1, 60), duplicate=False)
    return client


def _purchase(
    stack: Any, client: Client, tokens: int, duplicate: bool, http: httpx.Client | None = None
) -> None:
    purchase_id = uuid.uuid4().hex
    body = {"purchase_id": purchase_id, "tokens": tokens}
    for _ in range(2 if duplicate else 1):
        response = _with_retries(
            lambda: (http or stack.http).post(
                f"/v1/clients/{client.client_id}/purchases", json=body, headers=stack.billing
            )
        )
        assert response.status_code in (200, 201), response.text
    client.purchase_ids.add(purchase_id)
    client.credited_acknowledged += tokens


def _load(
    stack: Any,
    clients: list[Client],
    outcomes: Outcomes,
    rng: random.Random,
    count: int,
    sent: Counter[str],
) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=30) as http:
        for i in range(count):
            client = rng.choice(clients)
            if i % 25 == 0:
                _purchase(stack, client, rng.randint(1, 5), duplicate=i % 250 == 0, http=http)
            key = uuid.uuid4().hex
            params = {
                "lat": round(rng.uniform(-90, 90), 5),
                "lon": round(rng.uniform(-180, 180), 5),
                "query": rng.choice(["food", "cats", "monday", "deploy on friday"]),
            }
            headers = {**stack.auth(client.api_key), "Idempotency-Key": key}
            request_id = request_id_for(client.client_id, key)
            attempts = 0
            while True:
                attempts += 1
                try:
                    response = http.get("/memes", params=params, headers=headers)
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code not in RETRY_STATUSES:
                    break
                if attempts >= MAX_ATTEMPTS:
                    break
                with outcomes.lock:
                    outcomes.retries += 1
                time.sleep(0.25)
            sent["memes"] += 1
            with outcomes.lock:
                if response is None or (response.status_code == 503):
                    outcomes.gave_up.append(request_id)
                    continue
                outcomes.status[request_id] = response.status_code
                if response.status_code == 200:
                    outcomes.meme_id[request_id] = response.json()["meme_id"]


def _with_retries(call: Any) -> httpx.Response:
    for _ in range(MAX_ATTEMPTS):
        try:
            response = call()
            if response.status_code not in RETRY_STATUSES:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise AssertionError("no answer after retries")


# --- faults -------------------------------------------------------------------------


def _chaos(
    stack: Any,
    kafka: Any,
    rng: random.Random,
    stop: threading.Event,
    faults: Counter[str],
    sent: Counter[str],
    procs_lock: threading.Lock,
) -> None:
    """Spread the faults over the load, by the number of requests sent so far."""
    plan = [
        ("processor_kill", REQUESTS * (k + 1) // (PROCESSOR_KILLS + 2))
        for k in range(PROCESSOR_KILLS)
    ]
    plan.append(("generator_kill", REQUESTS * 2 // 5))
    if kafka.broker is not None:
        plan.append(("broker_restart", REQUESTS * 3 // 5))
    plan.sort(key=lambda step: step[1])
    for fault, at_requests in plan:
        while sent["memes"] < at_requests + rng.randint(0, 50):
            if stop.is_set():
                return
            time.sleep(0.05)
        with procs_lock:
            match fault:
                case "processor_kill":
                    stack.kill("processor")
                    time.sleep(rng.uniform(0.0, 1.5))
                    stack.start("processor")
                case "generator_kill":
                    stack.kill("generator-standard")
                    stack.start("generator-standard")
                case "broker_restart":
                    kafka.broker.stop()
                    time.sleep(1.0)
                    kafka.broker.start()
        faults[fault] += 1
        print(f"fault={fault} at_requests={sent['memes']}")


def _supervise(stack: Any, stop: threading.Event, procs_lock: threading.Lock) -> None:
    while not stop.is_set():
        with procs_lock:
            for name, proc in list(stack.procs.items()):
                if proc.poll() is not None:
                    print(f"supervisor restarts {name} code={proc.returncode}")
                    stack.start(name)
        time.sleep(0.5)


# --- ledger reads -------------------------------------------------------------------


def _ledger(stack: Any) -> list[Any]:
    return [parse_entry(m.value()) for m in read_topic(stack.settings, _topic(stack, "ledger"))]


def _topic(stack: Any, name: str) -> str:
    return f"{stack.settings.region}.{name}"


def _wait_until_all_ended(stack: Any, timeout_s: float = 120) -> Replay:
    """Charged requests end by the deadline (plus grace) at the latest: wait for that."""
    give_up = time.monotonic() + timeout_s
    while True:
        replay = Replay().apply_all(_ledger(stack))
        if not replay.open_requests() or time.monotonic() > give_up:
            return replay
        time.sleep(1.0)


def _delivered_memes(stack: Any) -> dict[str, str]:
    return {e.request_id: e.meme_id for e in _ledger(stack) if isinstance(e, MemeDelivered)}


def _credits(stack: Any) -> Counter[tuple[str, str]]:
    return Counter(
        (e.client_id, e.purchase_id) for e in _ledger(stack) if isinstance(e, TokensCredited)
    )
