"""``maas up``: the whole service on one machine, supervised.

Starts a local Kafka broker (unless ``KAFKA_BOOTSTRAP_SERVERS`` names a cluster), creates
the region's topics, then runs each process of the service as a child: the ledger
processor, both generator pools, the API, the usage analytics worker and the periodic
audit checkpoints. A child that dies is restarted after a short back-off: that is the
"supervisor restarts the process" the ledger processor's fatal-error path relies on.
Ctrl-C stops everything, the broker last.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from core.admin import ensure_topics
from core.settings import DEFAULT_BILLING_TOKEN, Settings
from maas.broker import LocalBroker
from maas.processes import PROCESSES, start_process

log = logging.getLogger("maas.up")

RESTART_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
HEALTHY_AFTER_S = 60.0


@dataclass
class Child:
    name: str
    log_path: Path
    host: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self, env: dict[str, str]) -> None:
        self.process = start_process(self.name, env, self.log_path, host=self.host, port=self.port)
        self.started_at = time.monotonic()
        log.info("started process=%s pid=%d log=%s", self.name, self.process.pid, self.log_path)


def children(settings: Settings, host: str, port: int) -> list[Child]:
    logs_dir = Path(settings.data_dir) / "logs"
    return [Child(name, logs_dir / f"{name}.log", host, port) for name in PROCESSES]


def up(settings: Settings, host: str, port: int) -> int:
    env = dict(os.environ)
    broker = None
    if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
        broker = LocalBroker(Path(settings.data_dir) / "kafka")
        if not broker.is_running():
            log.info("starting local kafka home=%s", broker.data_dir.parent)
            broker.start()
        env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
        settings = Settings.from_env(env)
    log.info("kafka bootstrap=%s region=%s", settings.bootstrap_servers, settings.region)
    ensure_topics(settings)

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    procs = children(settings, host, port)
    for child in procs:
        child.start(env)
    base_url = f"http://{host}:{port}"
    if _wait_ready(base_url, procs, lambda: stopping):
        print(_banner(base_url, settings), flush=True)
    try:
        while not stopping:
            for child in procs:
                assert child.process is not None
                code = child.process.poll()
                if code is not None and not stopping:
                    # A process that dies soon after start backs off exponentially, so a
                    # broken set-up shows one clear error in its log, not a restart storm.
                    quick = time.monotonic() - child.started_at < HEALTHY_AFTER_S
                    child.restarts = child.restarts + 1 if quick else 1
                    backoff_s = min(MAX_BACKOFF_S, RESTART_BACKOFF_S * 2 ** (child.restarts - 1))
                    log.warning(
                        "process exited process=%s code=%s restarts=%d backoff_s=%.0f log=%s",
                        child.name,
                        code,
                        child.restarts,
                        backoff_s,
                        child.log_path,
                    )
                    time.sleep(backoff_s)
                    child.start(env)
            time.sleep(0.5)
    finally:
        for child in reversed(procs):
            if child.process and child.process.poll() is None:
                child.process.terminate()
        for child in procs:
            if child.process:
                try:
                    child.process.wait(15)
                except subprocess.TimeoutExpired:
                    child.process.kill()
        if broker is not None:
            log.info("stopping local kafka")
            broker.stop()
    return 0


def _wait_ready(
    base_url: str, procs: list[Child], stopping: object, timeout_s: float = 120
) -> bool:
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up and not stopping():  # type: ignore[operator]
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    log.error(
        "service not ready after %ss; see logs: %s",
        timeout_s,
        " ".join(str(c.log_path) for c in procs),
    )
    return False


def _banner(base_url: str, settings: Settings) -> str:
    token = settings.billing_token.get_secret_value()
    note = (
        " (the development default: set MAAS_BILLING_TOKEN)"
        if token == DEFAULT_BILLING_TOKEN
        else ""
    )
    return f"""
MaaS Ledger is up: {base_url}  (region {settings.region}, Kafka {settings.bootstrap_servers})
Billing token: {token}{note}
Auditor token: {settings.auditor_token.get_secret_value()}
Logs: {Path(settings.data_dir) / "logs"}/   OpenAPI: {base_url}/docs   Stop: Ctrl-C
Usage analytics (requests per client and hour): http://127.0.0.1:{settings.usage_port}/usage/

Try it:
  # 1. billing registers a client (the API key is shown once)
  curl -s -X POST {base_url}/v1/clients -H 'Authorization: Bearer {token}' \\
       -H 'Content-Type: application/json' -d '{{"name": "demo"}}'
  # 2. billing credits 10 tokens (use the client_id from step 1)
  curl -s -X POST {base_url}/v1/clients/CLIENT_ID/purchases -H 'Authorization: Bearer {token}' \\
       -H 'Content-Type: application/json' -d '{{"purchase_id": "order-1", "tokens": 10}}'
  # 3. the client buys a meme with its key
  curl -s '{base_url}/memes?lat=40.730610&lon=-73.935242&query=food' \\
       -H 'Authorization: Bearer API_KEY'
  # 4. balance, usage and subscription
  curl -s {base_url}/v1/me -H 'Authorization: Bearer API_KEY'
"""
