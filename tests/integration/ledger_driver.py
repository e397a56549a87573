"""Drive the ledger processor directly over Kafka, without the API or the generators.

``LedgerDriver`` owns one fresh region (topic prefix ``t<hex>``) on a running cluster:

- it creates the region's topics (``core.admin.ensure_topics``);
- it starts, kills (SIGKILL), terminates (SIGTERM), pauses (SIGSTOP) and resumes
  ``python -m maas.cli processor --instance-id N`` subprocesses, each logging to
  ``<root>/logs/processor-N.log`` (appended across restarts);
- it produces the processor's inputs as the API would (``schemas.events.dump``,
  key = client_id, idempotent producer) and can send any event twice, or raw bytes;
- it collects every ``Reply`` on its partition ``reply_to`` of ``<region>.replies``
  (``read_committed``) by correlation id, in a background thread;
- it plays the generator pools: a background thread reads ``approved.standard`` and
  ``approved.ai`` (``read_committed``) and, through a policy, answers each approval with
  ``MemeGenerated`` / ``MemeFailed`` on the *same partition* of ``<region>.outcomes``
  (or not at all);
- ``read_ledger()`` folds the whole ledger topic into a ``ledger.replay.Replay``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from core.admin import delete_region_topics, ensure_topics, topic_specs
from core.batching import take_batch
from core.clock import now_ms
from core.settings import Settings
from core.topic_reader import position_of, read_topic
from core.topics import ANSWERED_HEADER, CLIENT_PARTITION_HEADER, Topics, header_value
from ledger.replay import Replay
from maas.processes import reap, start_process
from schemas.events import (
    AccountQueried,
    AccountView,
    ClientRegistered,
    Envelope,
    LedgerEntryUnion,
    MemeApproved,
    MemeFailed,
    MemeGenerated,
    MemeRequested,
    Reply,
    TokensPurchased,
    dump,
    parse_entry,
)
from tests.stack import value_of

REPO_ROOT = Path(__file__).resolve().parents[2]
FAR_FUTURE_MS = 3_600_000  # default request deadline: an hour, so no test expires by accident


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def header(msg: Message, name: str) -> bytes:
    """A header of a consumed record that must have a value."""
    value = header_value(msg, name)
    assert value is not None, name
    return value


@dataclass(frozen=True)
class Approval:
    """One committed ``MemeApproved``, the partition it was read from, and the partition
    its header names for the outcome (its client's)."""

    partition: int
    offset: int
    approved: MemeApproved
    client_partition: int


# A policy answers an approval with the outcomes to send, in order: "generated",
# "answered" (a meme made in time whose waiter its generator answered, marked as a
# generator marks it) or "failed"; each may repeat, to send duplicates; an empty list
# sends nothing.
OutcomePolicy = Callable[[Approval], list[str]]


def always_generate(_approval: Approval) -> list[str]:
    return ["generated"]


class ReplyCollector:
    """Every committed ``Reply`` on one partition of the replies topic, by correlation id."""

    def __init__(self, settings: Settings, topic: str, partition: int) -> None:
        self.replies: dict[str, list[Reply]] = defaultdict(list)
        # (offset, broker timestamp ms) of each reply, for diagnostics
        self.positions: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                **settings.kafka_common(),
                "group.id": new_id("ledger-driver-replies"),
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        self._consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        self._thread = threading.Thread(target=self._run, name="replies", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            reply = Reply.model_validate_json(value_of(msg))
            _, _, offset = position_of(msg)
            with self.cond:
                self.replies[reply.correlation_id].append(reply)
                self.positions[reply.correlation_id].append((offset, msg.timestamp()[1]))
                self.cond.notify_all()

    def count(self, correlation_id: str) -> int:
        with self.cond:
            return len(self.replies.get(correlation_id, ()))

    def wait_count(self, correlation_id: str, count: int, timeout_s: float) -> list[Reply]:
        """Wait for ``count`` replies to one id (a retried event is answered again)."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while len(self.replies.get(correlation_id, ())) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fewer than {count} replies to {correlation_id}")
                self.cond.wait(min(left, 0.5))
            return list(self.replies[correlation_id])

    def wait_any(self, correlation_ids: Iterable[str], timeout_s: float) -> str:
        """Return as soon as one of the ids has a reply (its id)."""
        wanted = list(correlation_ids)
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                for c in wanted:
                    if self.replies.get(c):
                        return c
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no reply to any of the ids")
                self.cond.wait(min(left, 0.5))

    def get(self, correlation_id: str) -> Reply | None:
        with self.cond:
            found = self.replies.get(correlation_id)
            return found[0] if found else None

    def wait(self, correlation_ids: Iterable[str], timeout_s: float) -> dict[str, Reply]:
        """The first reply to each id; ``TimeoutError`` names how many are missing."""
        wanted = set(correlation_ids)
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                missing = [c for c in wanted if not self.replies.get(c)]
                if not missing:
                    return {c: self.replies[c][0] for c in wanted}
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(missing)} of {len(wanted)} replies missing after {timeout_s} s, "
                        f"e.g. {sorted(missing)[:5]}"
                    )
                self.cond.wait(min(left, 0.5))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._consumer.close()


class ApprovalReader:
    """Reads committed approvals of both pools and answers them through a policy."""

    def __init__(self, driver: LedgerDriver) -> None:
        self.driver = driver
        self.policy: OutcomePolicy | None = None
        self.approvals: list[Approval] = []
        self.count_by_request: Counter[str] = Counter()
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                **driver.settings.kafka_common(),
                "group.id": new_id("ledger-driver-approved"),
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        n = driver.settings.partitions
        self._consumer.assign(
            [
                TopicPartition(driver.topics.approved(kind), p, OFFSET_BEGINNING)
                for kind in ("standard", "ai")
                for p in range(n)
            ]
        )
        self._thread = threading.Thread(target=self._run, name="approvals", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            _, partition, offset = position_of(msg)
            approved = MemeApproved.model_validate_json(value_of(msg))
            approval = Approval(
                partition, offset, approved, int(header(msg, CLIENT_PARTITION_HEADER))
            )
            with self.cond:
                self.approvals.append(approval)
                self.count_by_request[approval.approved.request_id] += 1
                policy = self.policy
                self.cond.notify_all()
            if policy is not None:
                for action in policy(approval):
                    self.driver.answer(approval, action)

    def duplicates(self) -> dict[str, int]:
        """Request ids approved more than once in committed output (a double charge)."""
        with self.cond:
            return {r: n for r, n in self.count_by_request.items() if n > 1}

    def wait_for(self, request_ids: Iterable[str], timeout_s: float) -> dict[str, Approval]:
        wanted = set(request_ids)
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                found = {
                    a.approved.request_id: a
                    for a in self.approvals
                    if a.approved.request_id in wanted
                }
                if len(found) == len(wanted):
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"approvals missing: {sorted(wanted - set(found))[:5]}")
                self.cond.wait(min(left, 0.5))

    def __len__(self) -> int:
        with self.cond:
            return len(self.approvals)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._consumer.close()


class LedgerDriver:
    """One fresh region, its processor processes, and the clients' side of the protocol."""

    def __init__(
        self,
        bootstrap: str,
        root: Path,
        *,
        env: dict[str, str] | None = None,
        reply_to: int = 0,
    ) -> None:
        self.root = root
        self.region = "t" + uuid.uuid4().hex[:10]
        self.data_dir = root / "data"
        self.log_dir = root / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("MAAS_") and k != "KAFKA_BOOTSTRAP_SERVERS"
        }
        self.env = {
            **base,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "MAAS_REGION": self.region,
            "MAAS_DATA_DIR": str(self.data_dir),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.settings = Settings.from_env(self.env)
        self.topics = Topics(self.region)
        self.reply_to = reply_to
        ensure_topics(self.settings)
        self.wait_topics_ready()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.producer = Producer(
            {
                **self.settings.kafka_common(),
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 2,
            }
        )
        self.replies = ReplyCollector(self.settings, self.topics.replies, reply_to)
        self.approvals = ApprovalReader(self)

    def wait_topics_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until every partition of the region answers a ListOffsets request.

        A topic just created can still answer NOT_LEADER for a moment (metadata runs
        ahead of the partition's leader state): the tests must not race on that.
        """
        consumer = Consumer(
            {**self.settings.kafka_common(), "group.id": new_id("ledger-driver-ready")}
        )
        try:
            deadline = time.monotonic() + timeout_s
            for spec in topic_specs(self.settings):
                for p in range(spec.num_partitions):
                    while True:
                        try:
                            consumer.get_watermark_offsets(TopicPartition(spec.topic, p), timeout=5)
                            break
                        except KafkaException:
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.1)
        finally:
            consumer.close()

    # --- processes -------------------------------------------------------------------

    def log_path(self, instance: str = "0") -> Path:
        return self.log_dir / f"processor-{instance}.log"

    def state_dir(self, instance: str = "0") -> Path:
        """The instance's local RocksDB files (one directory per partition below it)."""
        return self.data_dir / "ledger-state" / self.region / instance

    def start(self, instance: str = "0", **env: str) -> subprocess.Popen[bytes]:
        """Start a processor instance; ``env`` adds variables for this process only."""
        old = self.procs.get(instance)
        if old is not None and old.poll() is None:
            raise RuntimeError(f"processor {instance} is still running (pid {old.pid})")
        self.mark(instance, f"start processor {instance}")
        proc = start_process(
            "processor",
            {**self.env, **env},
            self.log_path(instance),
            instance_id=instance,
            cwd=REPO_ROOT,
        )
        self.procs[instance] = proc
        return proc

    def running(self, instance: str = "0") -> bool:
        proc = self.procs.get(instance)
        return proc is not None and proc.poll() is None

    def kill(self, instance: str = "0") -> None:
        """SIGKILL, as in a crash: no shutdown code runs."""
        proc = self.procs[instance]
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a stopped process dies just the same
            proc.kill()
        proc.wait(timeout=30)

    def terminate(self, instance: str = "0", timeout_s: float = 30.0) -> int:
        """SIGTERM, the clean stop; SIGKILL if it does not exit in time. Returns the code."""
        proc = self.procs[instance]
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            reap(proc, timeout_s)
        return proc.returncode

    def pause(self, instance: str) -> None:
        self.procs[instance].send_signal(signal.SIGSTOP)

    def resume(self, instance: str) -> None:
        self.procs[instance].send_signal(signal.SIGCONT)

    def restart(self, instance: str = "0") -> subprocess.Popen[bytes]:
        self.kill(instance)
        return self.start(instance)

    def log_text(self, instance: str = "0") -> str:
        path = self.log_path(instance)
        return path.read_text(errors="replace") if path.exists() else ""

    def mark(self, instance: str, text: str) -> int:
        """Append a marker line to the instance's log; returns the log's length before it."""
        path = self.log_path(instance)
        with path.open("ab") as log:
            size = log.tell()
            log.write(f"----- driver: {text} -----\n".encode())
        return size

    def log_since(self, instance: str, position: int) -> str:
        with self.log_path(instance).open("rb") as log:
            log.seek(position)
            return log.read().decode(errors="replace")

    def tail(self, instance: str = "0", lines: int = 40) -> str:
        return "\n".join(self.log_text(instance).splitlines()[-lines:])

    def wait_serving(self, timeout_s: float = 120.0) -> float:
        """Wait until every partition answers a query (``not_found`` for a probe client).

        A probe goes to each partition of the requests topic explicitly, so this also
        proves that every partition is assigned and restored. Returns the seconds waited.
        """
        started = time.monotonic()
        deadline = started + timeout_s
        pending = set(range(self.settings.partitions))
        while pending:
            sent = {}
            for p in pending:
                event = AccountQueried(
                    event_id=new_id("probe"),
                    client_id=f"probe-{p}",
                    region=self.region,
                    occurred_at_ms=now_ms(),
                    reply_to=self.reply_to,
                )
                self.send(event, partition=p)
                sent[event.event_id] = p
            self.flush()
            wait_until = min(deadline, time.monotonic() + 3.0)
            while pending and time.monotonic() < wait_until:
                for event_id, p in sent.items():
                    if self.replies.get(event_id) is not None:
                        pending.discard(p)
                time.sleep(0.05)
            for instance, proc in self.procs.items():
                if proc.poll() is not None and proc.returncode not in (0, -9, -15):
                    raise RuntimeError(
                        f"processor {instance} exited with {proc.returncode}:\n"
                        f"{self.tail(instance)}"
                    )
            if pending and time.monotonic() >= deadline:
                raise TimeoutError(f"partitions {sorted(pending)} not answering")
        return time.monotonic() - started

    # --- inputs ----------------------------------------------------------------------

    def _topic_for(self, event: Envelope) -> str:
        match event:
            case ClientRegistered() | TokensPurchased():
                return self.topics.purchases
            case MemeGenerated() | MemeFailed():
                return self.topics.outcomes
        return self.topics.requests

    def send(
        self,
        event: Envelope,
        *,
        partition: int | None = None,
        headers: dict[str, str | bytes | None] | None = None,
    ) -> None:
        self.send_raw(
            self._topic_for(event), event.client_id.encode(), dump(event), partition, headers
        )

    def send_raw(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        partition: int | None = None,
        headers: dict[str, str | bytes | None] | None = None,
    ) -> None:
        # Any: mypy matches ** against every keyword of produce(), not just partition.
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, **extra)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> None:
        if self.producer.flush(timeout_s) != 0:
            raise KafkaException("driver producer could not deliver within the timeout")

    def register(self, client_id: str | None = None, *, send: bool = True) -> ClientRegistered:
        client_id = client_id or new_id("c")
        event = ClientRegistered(
            event_id=new_id("reg"),
            client_id=client_id,
            region=self.region,
            occurred_at_ms=now_ms(),
            api_key_sha256=hashlib.sha256(client_id.encode()).hexdigest(),
            reply_to=self.reply_to,
        )
        if send:
            self.send(event)
        return event

    def purchase(
        self, client_id: str, tokens: int, purchase_id: str | None = None, *, send: bool = True
    ) -> TokensPurchased:
        event = TokensPurchased(
            event_id=new_id("buy"),
            client_id=client_id,
            region=self.region,
            occurred_at_ms=now_ms(),
            purchase_id=purchase_id or new_id("p"),
            tokens=tokens,
            reply_to=self.reply_to,
        )
        if send:
            self.send(event)
        return event

    def request_meme(
        self,
        client_id: str,
        request_id: str | None = None,
        *,
        deadline_ms: int | None = None,
        query: str = "food",
        send: bool = True,
    ) -> MemeRequested:
        occurred = now_ms()
        event = MemeRequested(
            event_id=new_id("req"),
            client_id=client_id,
            region=self.region,
            occurred_at_ms=occurred,
            request_id=request_id or new_id("r"),
            fingerprint=hashlib.sha256(f"40.7,-73.9,{query}".encode()).hexdigest()[:32],
            lat=40.730610,
            lon=-73.935242,
            query=query,
            deadline_ms=deadline_ms if deadline_ms is not None else occurred + FAR_FUTURE_MS,
            reply_to=self.reply_to,
        )
        if send:
            self.send(event)
        return event

    def query_account(self, client_id: str) -> AccountQueried:
        event = AccountQueried(
            event_id=new_id("q"),
            client_id=client_id,
            region=self.region,
            occurred_at_ms=now_ms(),
            reply_to=self.reply_to,
        )
        self.send(event)
        return event

    def accounts(
        self, client_ids: Iterable[str], timeout_s: float = 60.0
    ) -> dict[str, AccountView]:
        """Ask the processor for each client's account (``AccountQueried``)."""
        asked = {self.query_account(c).event_id: c for c in client_ids}
        self.flush()
        replies = self.replies.wait(asked, timeout_s)
        views = {}
        for event_id, client_id in asked.items():
            reply = replies[event_id]
            assert reply.outcome == "account" and reply.account is not None, reply
            views[client_id] = reply.account
        return views

    # --- the generator's side ----------------------------------------------------------

    def serve_outcomes(self, policy: OutcomePolicy | None = always_generate) -> None:
        """Answer every approval (past ones too) through ``policy``; None stops answering."""
        with self.approvals.cond:
            self.approvals.policy = policy
            backlog = list(self.approvals.approvals) if policy is not None else []
        for approval in backlog:
            for action in policy(approval):  # type: ignore[misc]
                self.answer(approval, action)

    def outcome(self, approval: Approval, action: str) -> MemeGenerated | MemeFailed:
        approved = approval.approved
        common = {
            "event_id": f"{approved.request_id}:{action}",
            "client_id": approved.client_id,
            "region": self.region,
            "occurred_at_ms": now_ms(),
            "causation_id": approved.event_id,
            "request_id": approved.request_id,
            "kind": approved.kind,
        }
        if action in ("generated", "answered"):
            return MemeGenerated(
                **common,
                meme_id=f"m-{approved.request_id}",
                template="drake",
                caption="test",
                image_key=f"blobs/{approved.request_id}.png",
                replied_to=approved.correlation_id if action == "answered" else None,
            )
        if action == "failed":
            return MemeFailed(**common, error="generator fault (test)")
        raise ValueError(action)

    def answer(self, approval: Approval, action: str) -> MemeGenerated | MemeFailed:
        """Send an outcome on its client's partition of ``<region>.outcomes``, as the
        approval's header names it."""
        event = self.outcome(approval, action)
        headers: dict[str, str | bytes | None] | None = (
            {ANSWERED_HEADER: b"1"} if action == "answered" else None
        )
        self.send(event, partition=approval.client_partition, headers=headers)
        return event

    # --- the ledger --------------------------------------------------------------------

    def read_entries(self) -> list[LedgerEntryUnion]:
        """Every committed ledger entry; per partition (so per client) in log order."""
        return [parse_entry(value_of(m)) for m in read_topic(self.settings, self.topics.ledger)]

    def count_records(self, topic: str, *, committed: bool = True) -> int:
        """Records in ``topic``; with ``committed=False`` also those of aborted transactions
        (transaction markers are never counted)."""
        consumer = Consumer(
            {
                **self.settings.kafka_common(),
                "group.id": new_id("ledger-driver-count"),
                "isolation.level": "read_committed" if committed else "read_uncommitted",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
            }
        )
        try:
            parts = range(self.settings.partitions)
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
            remaining, count = set(parts), 0
            deadline = time.monotonic() + 60
            while remaining and time.monotonic() < deadline:
                for msg in take_batch(consumer, 10_000, 0.5):
                    error = msg.error()
                    if error is None:
                        count += 1
                    elif error.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(msg.partition())
                    else:
                        raise KafkaException(error)
            if remaining:
                raise TimeoutError(f"partitions {sorted(remaining)} of {topic} not read to the end")
            return count
        finally:
            consumer.close()

    def read_ledger(self) -> Replay:
        return Replay().apply_all(self.read_entries())

    # --- teardown ----------------------------------------------------------------------

    def close(self) -> None:
        for instance, proc in self.procs.items():
            if proc.poll() is None:
                self.kill(instance)
        self.approvals.close()
        self.replies.close()
        self.producer.flush(10)
        self.producer.close()
        delete_region_topics(self.settings.bootstrap_servers, self.region)


class Clock:
    """Prints how long each phase of a test took (visible with ``-s``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = self.last = time.monotonic()

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        print(
            f"[{self.name}] {phase}: {now - self.last:.1f} s (total {now - self.started:.1f} s)",
            flush=True,
        )
        self.last = now


def setup_clients(driver: LedgerDriver, tokens: dict[str, int], timeout_s: float = 60.0) -> None:
    """Register each client and credit its tokens (one purchase each), through replies."""
    registered = [driver.register(c) for c in tokens]
    driver.flush()
    replies = driver.replies.wait([e.event_id for e in registered], timeout_s)
    assert all(r.outcome == "registered" for r in replies.values()), replies
    bought = {driver.purchase(c, n).event_id: c for c, n in tokens.items() if n > 0}
    driver.flush()
    replies = driver.replies.wait(bought, timeout_s)
    assert all(r.outcome == "credited" for r in replies.values()), replies
