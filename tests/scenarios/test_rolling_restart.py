"""Scenario: a deploy without downtime. ``maas up`` runs the whole service on the session's
broker (two ledger processors, one standard and one AI generator pool, two API
processes, the observers); clients ask for memes at a steady rate, one of them on Memes
AI, each call with an ``Idempotency-Key`` and no retry; meanwhile ``maas restart``
replaces every process in turn.

We expect: ``maas restart`` exits 0 and names every process, the ledger processors last;
each runs with a new pid;
every call of the whole run was answered 200, none slower than the request deadline; and
each client's balance is what it bought less one token per meme, each charged once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from maas.broker import free_port
from maas.rolling import in_roll_order
from maas.supervisor import children
from tests.maas_up import start_up

pytestmark = [pytest.mark.kafka, pytest.mark.scenario]

# One pool of each kind: its replacement alone carries its memes through the handover
# (a twin would hide a gap); two processors and two APIs, as their handovers differ.
COUNTS = {"processor": 2, "generator-standard": 1, "generator-ai": 1, "api": 2}
FLAGS = {
    "processor": "--processors",
    "generator-standard": "--generators-standard",
    "generator-ai": "--generators-ai",
    "api": "--api",
}
# The order maas/rolling.py replaces them in (pinned in tests/unit/test_rolling.py).
ROLL_ORDER = [c.label for c in in_roll_order(children(Settings(), "127.0.0.1", 0, COUNTS))]
CHILDREN = set(ROLL_ORDER)
RATE = 20.0  # calls a second
TOKENS = 1_000
BILLING = "dev-billing-token"
STARTED = re.compile(r"started process=(\S+) pid=(\d+)")


def pids(log: str) -> dict[str, int]:
    """Each child's latest pid, by the supervisor's log."""
    return {label: int(pid) for label, pid in STARTED.findall(log)}


@pytest.mark.timeout(300)
def test_a_rolling_restart_under_load_answers_every_call(kafka: Any, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "MAAS_REGION": "r" + uuid.uuid4().hex[:8],
        "MAAS_DATA_DIR": str(tmp_path / "data"),
        "MAAS_DEV_MODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    up_log = tmp_path / "up.log"
    up = start_up(["--port", str(port), *_count_flags()], env, up_log)
    try:
        before = pids(up_log.read_text())
        assert set(before) == CHILDREN
        # Closed before the roll: its idle connection would hold a stopping API's drain
        # (api/draining.py) to its bound.
        with httpx.Client(base_url=base, timeout=30) as http:
            keys = _clients(http, 8, ai=1)
        load = Load(base, keys)
        with load:
            time.sleep(3)
            restart = subprocess.run(
                [sys.executable, "-m", "maas.cli", "restart", "--timeout", "200"],
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
            )
            time.sleep(3)
        with httpx.Client(base_url=base, timeout=30) as http:
            balances = {key: http.get("/v1/me", headers=_auth(key)).json() for key in keys}
        log = up_log.read_text()
    finally:
        up.send_signal(2)  # Ctrl-C: stops every child, then itself
        up.wait(60)
    assert restart.returncode == 0, restart.stdout + restart.stderr + log[-4000:]
    assert "maas restart: done; restarted in turn:" in restart.stdout
    lines = restart.stdout.splitlines()
    restarted = [line.split()[1] for line in lines if line.startswith("restarted ")]
    assert restarted == ROLL_ORDER, restart.stdout
    after = pids(log)
    assert all(after[label] != before[label] for label in CHILDREN), (before, after)
    statuses = Counter(status for status, _ in load.answers)
    assert statuses == {200: len(load.answers)}, statuses
    assert len(load.answers) >= RATE * 10  # the load ran through the whole roll
    assert max(seconds for _, seconds in load.answers) < 5.0
    memes = Counter(key for key in load.served)
    for key, account in balances.items():
        assert account["balance"] == TOKENS - memes[key], (key, account, memes[key])
        assert account["memes_requested"] == memes[key]


class Load:
    """``RATE`` meme calls a second over ``keys`` in turn, each on its own thread from a
    pool, until the block ends; every answer's status and seconds kept."""

    def __init__(self, base: str, keys: list[str]) -> None:
        # A stopping API waits for each open connection's next call, or its close, to end
        # it (api/draining.py): the idle connections httpx keeps for 5 s by default made
        # that wait the drain's whole bound (5 s) per API.
        limits = httpx.Limits(keepalive_expiry=1.0)
        self.http = httpx.Client(base_url=base, timeout=30, limits=limits)
        self.keys = keys
        self.answers: list[tuple[int, float]] = []
        self.served: list[str] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(32)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)
        self.http.close()

    def _run(self) -> None:
        started = time.monotonic()
        sent = 0
        while not self._stop.is_set():
            due = started + sent / RATE
            self._stop.wait(max(0.0, due - time.monotonic()))
            self._pool.submit(self._call, self.keys[sent % len(self.keys)], sent)
            sent += 1

    def _call(self, key: str, n: int) -> None:
        headers = {**_auth(key), "Idempotency-Key": f"call-{n}"}
        params: dict[str, float | str] = {"lat": 40.7 + n % 5, "lon": -73.9, "query": "deploys"}
        started = time.monotonic()
        try:
            status = self.http.get("/memes", params=params, headers=headers).status_code
        except httpx.HTTPError as exc:
            status = -1
            print(f"call {n}: {exc!r}")
        self.answers.append((status, time.monotonic() - started))
        if status == 200:
            self.served.append(key)


def _clients(http: httpx.Client, count: int, ai: int) -> list[str]:
    billing = {"Authorization": f"Bearer {BILLING}"}
    keys = []
    for i in range(count):
        client = http.post("/v1/clients", headers=billing, json={"name": f"c{i}"}).json()
        purchase = {"purchase_id": f"p{i}", "tokens": TOKENS}
        http.post(f"/v1/clients/{client['client_id']}/purchases", headers=billing, json=purchase)
        if i < ai:
            http.put(f"/v1/clients/{client['client_id']}/subscription", headers=billing, json={})
        keys.append(client["api_key"])
    return keys


def _count_flags() -> list[str]:
    return [arg for kind, count in COUNTS.items() for arg in (FLAGS[kind], str(count))]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
