"""``maas up``: the whole service on one machine, supervised.

Starts a local Kafka broker (unless ``KAFKA_BOOTSTRAP_SERVERS`` names a cluster), creates
the region's topics, then runs each process of the service as a child: the ledger
processor instances, the generator pools of both kinds and the API processes (as many of
each as asked, each with its own instance id; the API processes share one port), the
usage analytics worker and the periodic audit checkpoints. A child that dies is
restarted at once: that is the "supervisor restarts the process" the ledger processor's
fatal-error path relies on, and a killed processor is back in about a second. Only a
crash loop backs off (``restart_delay_s``), so a broken set-up shows one clear error in
its log, not a restart storm. An API process whose heartbeat falls silent for
``api_watchdog_s`` is killed, then restarted the same way: stopped, it would keep its
share of the port's new connections unanswered (``core/heartbeat.py``). SIGUSR2
(``maas restart``) replaces every child in turn, each once the last serves again: a
deploy without downtime (``maas/rolling.py``). The local broker is watched the same way:
if it exits (a crash, the OOM killer, a kill), it is started again on its port and data,
with the same crash-loop backoff, and the children whose restarts were backing off while
it was away start at once (``LocalKafka``). Ctrl-C stops everything, the broker last.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from core.admin import ensure_topics
from core.heartbeat import HeartbeatWatch, kill_silent
from core.readiness import forget
from core.settings import DEFAULT_BILLING_TOKEN, Settings
from maas.broker import LocalBroker
from maas.processes import (
    PROCESSES,
    SERVICE,
    SUPERVISOR_PID_VARIABLE,
    heartbeat_file,
    process_label,
    ready_file,
    start_process,
    stop_together,
)
from maas.rolling import PID_FILE, ROLL_SIGNAL, STATUS_FILE, Roll, in_roll_order

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
    instance_id: str | None = None  # of one of several processes of a kind (SERVICE)
    heartbeat: Path | None = None  # the file it touches, if its kind is watched
    watchdog_s: float = 0.0  # the longest silence of its heartbeat before it is killed
    ready_file: Path | None = None  # the file it touches once it serves
    process: subprocess.Popen[bytes] | None = None
    watch: HeartbeatWatch | None = None
    quick_exits: int = 0
    started_at: float = field(default=0.0)
    restart_at: float | None = None  # set while a restart waits out its delay

    @property
    def label(self) -> str:
        return process_label(self.name, self.instance_id)

    def start(self, env: dict[str, str]) -> None:
        if self.ready_file is not None:
            forget(self.ready_file)
        self.process = start_process(
            self.name,
            env,
            self.log_path,
            host=self.host,
            port=self.port,
            instance_id=self.instance_id,
            heartbeat=self.heartbeat,
            ready=self.ready_file,
        )
        self.started_at = time.monotonic()
        if self.heartbeat is not None:
            self.watch = HeartbeatWatch.start(self.heartbeat, self.watchdog_s, self.started_at)
        log.info("started process=%s pid=%d log=%s", self.label, self.process.pid, self.log_path)


@dataclass
class LocalKafka:
    """The local broker ``maas up`` started, supervised like a child. A start runs in a
    thread of its own (seconds; up to the broker's start timeout if it never answers), so
    that the children are watched meanwhile: a processor that ended on the broker's death
    starts again at once and waits for the broker, instead of waiting for the
    supervisor."""

    broker: LocalBroker
    quick_exits: int = 0
    started_at: float = field(default_factory=time.monotonic)
    restart_at: float | None = None  # set while it is down
    starting: _Start | None = None  # a start under way

    def supervise(self, children: list[Child], now: float) -> None:
        """One look: notice that the broker is gone, start it again once its delay is
        over, and learn how the start went."""
        if self.starting is not None:
            self._started(children, now)
            return
        if self.restart_at is None:
            if self.broker.is_running():
                return
            delay_s, self.quick_exits = restart_delay_s(now - self.started_at, self.quick_exits)
            self.restart_at = now + delay_s
            log.error(
                "local kafka exited; restarting it quick_exits=%d restart_in_s=%.1f log=%s\n%s",
                self.quick_exits,
                delay_s,
                self.broker.log_path,
                self.broker.tail(10),
            )
            return
        if now < self.restart_at:
            return
        self.started_at = now
        self.restart_at = None
        self.starting = _Start(self.broker)

    def _started(self, children: list[Child], now: float) -> None:
        assert self.starting is not None
        if self.starting.thread.is_alive():
            return
        error, self.starting = self.starting.error, None
        if error is not None:  # the next look counts it as a quick exit
            log.error("local kafka did not start: %s", error)
            return
        log.info("local kafka is back after_s=%.1f", now - self.started_at)
        # Their quick exits were the broker's absence, not a crash loop of their own.
        for child in children:
            if child.restart_at is not None:
                child.restart_at = now
                child.quick_exits = 0

    def stop(self) -> None:
        """Stop the broker, after a start under way has ended (else it would launch a JVM
        after the stop, left running)."""
        if self.starting is not None and self.starting.thread.is_alive():
            log.info("waiting for the local kafka's start to end, to stop it")
            self.starting.thread.join()
        self.broker.stop()


class _Start:
    """``broker.start()`` in a daemon thread; ``error`` is what it raised, if anything (any
    failure is tried again, as ``maas up`` would not otherwise notice it)."""

    def __init__(self, broker: LocalBroker) -> None:
        self.broker = broker
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, name="kafka-start", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.broker.start()
        except Exception as exc:  # reported by the next look, on the supervisor's thread
            self.error = exc


def check_api_count(count: int, settings: Settings) -> None:
    """Refuse more API processes than the replies topic has partitions (ValueError naming
    the option): each API instance reads its replies from a partition of its own."""
    if count > settings.reply_partitions:
        raise ValueError(
            f"--api {count}: at most {settings.reply_partitions} API processes: each reads "
            "its replies from a partition of its own, and the replies topic has "
            f"{settings.reply_partitions} (MAAS_REPLY_PARTITIONS)"
        )


def children(settings: Settings, host: str, port: int, counts: Mapping[str, int]) -> list[Child]:
    """Every process of the service: ``counts[name]`` of each kind of SERVICE, with
    instance ids 0, 1, ...; one of each observer."""
    data_dir = Path(settings.data_dir)
    procs = []
    for name in PROCESSES:
        instances = [str(i) for i in range(counts[name])] if name in SERVICE else [None]
        for instance_id in instances:
            procs.append(
                Child(
                    name,
                    data_dir / "logs" / f"{process_label(name, instance_id)}.log",
                    host,
                    port,
                    instance_id=instance_id,
                    heartbeat=heartbeat_file(data_dir, name, instance_id),
                    watchdog_s=settings.api_watchdog_s,
                    ready_file=ready_file(data_dir, name, instance_id),
                )
            )
    return procs


def up(settings: Settings, host: str, port: int, counts: Mapping[str, int], kafka_port: int) -> int:
    # The children end with this process (end_with_supervisor): Linux signals a child when
    # the thread that started it ends, so every child is started from this, the main one.
    env = {**os.environ, SUPERVISOR_PID_VARIABLE: str(os.getpid())}
    kafka = None
    if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
        broker = LocalBroker(Path(settings.data_dir) / "kafka", port=kafka_port)
        if not broker.is_running():
            log.info("starting local kafka home=%s", broker.data_dir.parent)
            broker.start()
        kafka = LocalKafka(broker)
        env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
        settings = Settings.from_env(env)
    log.info("kafka bootstrap=%s region=%s", settings.bootstrap_servers, settings.region)
    ensure_topics(settings)

    stopping = False
    roll_asked = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    def ask_roll(*_: object) -> None:
        nonlocal roll_asked
        roll_asked = True

    # The children are sessions of their own (maas.processes): a closed terminal's hangup
    # reaches only the supervisor, which must then stop them like a Ctrl-C does.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    signal.signal(ROLL_SIGNAL, ask_roll)

    procs = children(settings, host, port, counts)
    for child in procs:
        child.start(env)
    base_url = f"http://{host}:{port}"
    if _wait_ready(base_url, procs, lambda: stopping):
        print(_banner(base_url, settings), flush=True)
    roll: Roll | None = None
    data_dir = Path(settings.data_dir)
    pid_file = data_dir / PID_FILE
    pid_file.write_text(str(os.getpid()), encoding="utf-8")  # for maas restart
    try:
        while not stopping:
            now = time.monotonic()
            if kafka is not None:
                kafka.supervise(procs, now)
            for child in procs:
                supervise(child, env, now)
            if roll_asked:
                roll_asked = False
                if roll is not None and roll.rolling:
                    log.warning("a rolling restart is already under way; asked again, ignored")
                else:
                    roll = Roll(in_roll_order(procs), data_dir / STATUS_FILE, env)
            if roll is not None and roll.rolling:
                roll.step(now)
            time.sleep(POLL_S)
    finally:
        pid_file.unlink(missing_ok=True)
        stop_together([c.process for c in reversed(procs) if c.process], 15)
        if kafka is not None:
            log.info("stopping local kafka")
            kafka.stop()
    return 0


def supervise(child: Child, env: dict[str, str], now: float) -> None:
    """One look at a child: kill it if its heartbeat fell silent, notice an exit, and
    restart when its delay is over."""
    assert child.process is not None
    if child.restart_at is None:
        code = child.process.poll()
        if code is None:
            silent_s = child.watch.silent_s(now) if child.watch is not None else None
            if silent_s is not None:
                log.error(
                    "process unresponsive process=%s pid=%d silent_s=%.1f; killing it so "
                    "that its share of the connections goes to the others (its stacks, if it "
                    "can write them, are in its log)",
                    child.label,
                    child.process.pid,
                    silent_s,
                )
                kill_silent(child.process)
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
    """Until every API process has answered ``/readyz`` with 200. Each probe opens a new
    connection (``httpx.get``), so the kernel hands the probes to all of them in turn."""
    apis = {c.instance_id for c in procs if c.name == "api"}
    ready: set[str] = set()
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up and not stopping():  # type: ignore[operator]
        try:
            response = httpx.get(f"{base_url}/readyz", timeout=2)
            if response.status_code == 200:
                ready.add(str(response.json()["api_instance"]))
                if ready >= apis:
                    return True
        except httpx.HTTPError:
            pass
        time.sleep(POLL_S)
    log.error(
        "service not ready after %ss api_instances_ready=%s; see logs: %s",
        timeout_s,
        ",".join(sorted(ready)) or "none",
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
