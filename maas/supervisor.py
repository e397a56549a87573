"""``maas up``: the whole service on one machine, supervised.

Starts a local Kafka broker (unless ``KAFKA_BOOTSTRAP_SERVERS`` names a cluster), creates
the region's topics, then runs each process of the service as a child: the ledger
processor, both generator pools, the API, the usage analytics worker and the periodic
audit checkpoints. A child that dies is restarted at once: that is the "supervisor
restarts the process" the ledger processor's fatal-error path relies on, and a killed
processor is back in about a second. Only a crash loop backs off (``restart_delay_s``),
so a broken set-up shows one clear error in its log, not a restart storm. Ctrl-C stops
everything, the broker last.
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

CRASH_LOOP_S = 5.0  # an exit this soon after a start counts towards a crash loop
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
POLL_S = 0.1


def restart_delay_s(lived_s: float, quick_exits: int) -> tuple[float, int]:
    """How long to wait before restarting a child that lived ``lived_s`` and had
    ``quick_exits`` exits in a row soon after a start; returns (delay, quick exits now).

    A child that ran for a while (killed, fenced, a watchdog exit) restarts at once. One
    that dies right after starting, again and again, waits 0.5 s, 1 s, 2 s... up to 30 s.
    """
    if lived_s >= CRASH_LOOP_S:
        return 0.0, 0
    quick_exits += 1
    if quick_exits == 1:
        return 0.0, quick_exits
    return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (quick_exits - 2)), quick_exits


@dataclass
class Child:
    name: str
    log_path: Path
    host: str
    port: int
    instance_id: str | None = None  # of a ledger processor instance
    process: subprocess.Popen[bytes] | None = None
    quick_exits: int = 0
    started_at: float = field(default=0.0)
    restart_at: float | None = None  # set while a restart waits out its delay

    @property
    def label(self) -> str:
        return self.name if self.instance_id is None else f"{self.name}-{self.instance_id}"

    def start(self, env: dict[str, str]) -> None:
        self.process = start_process(
            self.name,
            env,
            self.log_path,
            host=self.host,
            port=self.port,
            instance_id=self.instance_id,
        )
        self.started_at = time.monotonic()
        log.info("started process=%s pid=%d log=%s", self.label, self.process.pid, self.log_path)


def children(settings: Settings, host: str, port: int, processors: int = 2) -> list[Child]:
    """Every process of the service, with ``processors`` ledger processor instances.

    Two by default: while one restarts after a crash, the other keeps deciding its own
    partitions, and a stopped (hung) one's partitions move to the other after the
    session timeout."""
    logs_dir = Path(settings.data_dir) / "logs"
    procs = []
    for name in PROCESSES:
        if name == "processor":
            for instance in range(processors):
                log_path = logs_dir / f"{name}-{instance}.log"
                procs.append(Child(name, log_path, host, port, instance_id=str(instance)))
        else:
            procs.append(Child(name, logs_dir / f"{name}.log", host, port))
    return procs


def up(settings: Settings, host: str, port: int, processors: int = 2) -> int:
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

    procs = children(settings, host, port, processors)
    for child in procs:
        child.start(env)
    base_url = f"http://{host}:{port}"
    if _wait_ready(base_url, procs, lambda: stopping):
        print(_banner(base_url, settings), flush=True)
    try:
        while not stopping:
            for child in procs:
                supervise(child, env, time.monotonic())
            time.sleep(POLL_S)
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


def supervise(child: Child, env: dict[str, str], now: float) -> None:
    """One look at a child: notice an exit, and restart when its delay is over."""
    assert child.process is not None
    if child.restart_at is None:
        code = child.process.poll()
        if code is None:
            return
        delay_s, child.quick_exits = restart_delay_s(now - child.started_at, child.quick_exits)
        child.restart_at = now + delay_s
        log.warning(
            "process exited process=%s code=%s quick_exits=%d restart_in_s=%.1f log=%s",
            child.label,
            code,
            child.quick_exits,
            delay_s,
            child.log_path,
        )
    if now >= child.restart_at:
        child.restart_at = None
        child.start(env)


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
