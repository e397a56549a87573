"""A whole region as real processes on the session's broker (the ``stack`` fixture).

Each test module gets a fresh region (topic prefix ``t<8 hex>``), data dir and billing
token (but the modules marked ``shared_region``, which only call the API, share one), and
these processes, started through the ``maas`` CLI as in production
(``maas.processes.start_process``, as ``maas up`` starts them):
``topics create`` (run to completion first), ``processor``, ``generator --kind
standard``, ``generator --kind ai`` and ``api --port <free port>``. A test may
``start(name, instance_id)`` more of a kind: ``start("api", "1")`` runs a second API
process on the same port, named ``api-1``.

Fault tests can ``kill(name)`` (SIGKILL) and ``restart(name)`` any of them. Each
process logs to ``<tmp>/logs/<name>.log`` (appended across restarts); if a test of the
module failed, teardown prints the tail of every log.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Message

from core.admin import delete_region_topics
from core.settings import Settings
from maas.broker import free_port
from maas.processes import SERVICE, process_label, reap, start_process, stop_together

STARTUP_TIMEOUT_S = 120.0
LOG_TAIL_LINES = 40
# A query containing this text makes the generators fail: the 502 / refund path.
FAULT_QUERY = "inject-generator-fault"


@dataclass
class Stack:
    base_url: str
    billing_token: str
    settings: Settings
    env: dict[str, str]
    log_dir: Path
    port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # by label
    api_instances: set[int] = field(default_factory=set)  # of the API processes started
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.base_url, timeout=30.0)

    # --- processes -------------------------------------------------------------------

    def start(self, name: str, instance_id: str | None = None) -> subprocess.Popen[bytes]:
        label = process_label(name, instance_id)
        proc = start_process(
            name, self.env, self.log_dir / f"{label}.log", port=self.port, instance_id=instance_id
        )
        self.procs[label] = proc
        if name == "api":
            self.api_instances.add(int(instance_id or self.settings.api_instance))
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown hook runs, as in a crash."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def terminate(self, name: str, timeout_s: float = 15.0) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            return
        if name.startswith("api"):
            # A stopping API waits for its clients to leave (api_drain_s): these leave now.
            self.http.close()
            self.http = httpx.Client(base_url=self.base_url, timeout=30.0)
        proc.terminate()
        reap(proc, timeout_s)

    def stop_all(self, timeout_s: float = 15.0) -> None:
        """The module is done: every process is told to stop at once, then awaited (one
        at a time, as ``terminate``, took ~2.5 s). Clients leave first: a stopping API
        waits for them (api_drain_s)."""
        self.http.close()
        stop_together(list(self.procs.values()), timeout_s)

    def restart(self, name: str, instance_id: str | None = None) -> subprocess.Popen[bytes]:
        self.terminate(process_label(name, instance_id))
        proc = self.start(name, instance_id)
        if name == "api":
            self.wait_ready()
        return proc

    def tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Until every API process started has answered ``/readyz`` with 200. Each probe
        is a new connection, so the API processes sharing the port all get some."""
        deadline = time.monotonic() + timeout_s
        ready: set[int] = set()
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")
            try:
                response = httpx.get(f"{self.base_url}/readyz", timeout=5)
                if response.status_code == 200:
                    ready.add(response.json()["api_instance"])
                    if ready >= self.api_instances:
                        return
                last = response.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise TimeoutError(
            f"/readyz not ready after {timeout_s} s (API instances ready: {sorted(ready)} of "
            f"{sorted(self.api_instances)}): {last}\n{self.tail('api')}"
        )

    # --- helpers -----------------------------------------------------------------------

    @property
    def auditor_token(self) -> str:
        return self.env["MAAS_AUDITOR_TOKEN"]

    @property
    def auditor(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.auditor_token}"}

    @property
    def billing(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.billing_token}"}

    @staticmethod
    def auth(api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    def new_client(self, tokens: int = 0) -> tuple[str, str]:
        """Register a client and credit ``tokens``; returns (client_id, api_key)."""
        response = self.http.post("/v1/clients", json={"name": "test"}, headers=self.billing)
        assert response.status_code == 201, response.text
        body = response.json()
        if tokens:
            self.purchase(body["client_id"], tokens)
        return body["client_id"], body["api_key"]

    def purchase(self, client_id: str, tokens: int, purchase_id: str | None = None) -> Any:
        response = self.http.post(
            f"/v1/clients/{client_id}/purchases",
            json={"purchase_id": purchase_id or uuid.uuid4().hex, "tokens": tokens},
            headers=self.billing,
        )
        assert response.status_code in (200, 201), response.text
        return response.json()

    def account(self, api_key: str) -> dict[str, Any]:
        response = self.http.get("/v1/me", headers=self.auth(api_key))
        assert response.status_code == 200, response.text
        return response.json()

    def balance(self, api_key: str) -> int:
        return self.account(api_key)["balance"]

    def meme(self, api_key: str, **params: Any) -> httpx.Response:
        headers = self.auth(api_key)
        if "idempotency_key" in params:
            headers["Idempotency-Key"] = params.pop("idempotency_key")
        query = {"lat": 40.730610, "lon": -73.935242, "query": "food", **params}
        return self.http.get("/memes", params=query, headers=headers)

    def settled(self, api_key: str, request_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """The request's record once the ledger has ended it. A meme made in time is told
        to the client by its generator, and the ledger records the delivery just after."""
        deadline = time.monotonic() + timeout_s
        while True:
            response = self.http.get(f"/v1/requests/{request_id}", headers=self.auth(api_key))
            assert response.status_code == 200, response.text
            view: dict[str, Any] = response.json()
            if view["status"] != "charged" or time.monotonic() > deadline:
                return view
            time.sleep(0.05)

    def wait_serving(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Ready is not enough: the processor must be folding. Register until it answers."""
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            response = self.http.post("/v1/clients", json={}, headers=self.billing)
            if response.status_code == 201:
                return
            last = f"{response.status_code} {response.text}"
            time.sleep(0.5)
        raise TimeoutError(f"ledger not answering after {timeout_s} s: {last}")


def run_stack(
    kafka: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Generator[Stack, None, None]:
    root = tmp_path_factory.mktemp("stack")
    log_dir = root / "logs"
    log_dir.mkdir()
    region = "t" + uuid.uuid4().hex[:8]
    billing_token = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "MAAS_REGION": region,
        "MAAS_DATA_DIR": str(root / "data"),
        "MAAS_BILLING_TOKEN": billing_token,
        "MAAS_AUDITOR_TOKEN": f"auditor-{billing_token}",
        "MAAS_AUDIT_SIGNING_KEY": f"signing-{billing_token}",
        "MAAS_FAULT_INJECTION_QUERY": FAULT_QUERY,
        "PYTHONUNBUFFERED": "1",
    }
    settings = Settings.from_env(env)
    port = free_port()
    stack = Stack(
        base_url=f"http://127.0.0.1:{port}",
        billing_token=billing_token,
        settings=settings,
        env=env,
        log_dir=log_dir,
        port=port,
    )
    failed_before = request.session.testsfailed
    started = False
    try:
        with (log_dir / "topics.log").open("ab") as log:
            subprocess.run(
                [sys.executable, "-m", "maas.cli", "topics", "create"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=120,
            )
        for name in SERVICE:
            stack.start(name)
        stack.wait_ready()
        stack.wait_serving()
        started = True
        yield stack
    finally:
        stack.stop_all()
        delete_region_topics(kafka.bootstrap, region)
        # A failed start-up is not counted as a failed test yet: print for it too.
        if not started or request.session.testsfailed > failed_before:
            for name in ("topics", *stack.procs):
                print(f"\n----- {name} log (last {LOG_TAIL_LINES} lines) -----")
                print(stack.tail(name))


def process_state(pid: int) -> str:
    """The process's state letter in /proc (T: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def wait_for_state(pid: int, letter: str, timeout_s: float) -> bool:
    """Whether the process reached state ``letter`` within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while process_state(pid) != letter:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def value_of(msg: Message) -> bytes:
    """The value of a consumed record that must have one: the type also allows the
    missing value of a tombstone, which would be a bug where this is called."""
    value = msg.value()
    assert value is not None, f"no value: {msg.topic()} [{msg.partition()}] @{msg.offset()}"
    return value
