"""A generator pool: consumes approved work of one kind, makes the meme, reports the outcome.

A meme made by its deadline is also told to the API that waits for it (outcome "made",
on the reply partition the approval names), once its ``MemeGenerated`` is acknowledged:
the client does not wait for the ledger's second transaction. The ledger delivers that
meme, judged by the same event time, and answers only the other waiters (retries).

Standard and AI work live on separate topics with separate consumer groups, so a slow AI
backlog never queues ahead of standard memes. Delivery is at least once: a job's offset
is stored only after its outcome (and its answer) is acknowledged by the broker and
every earlier job of its partition is done too (``InOrder``); the consumer commits what
is stored every ``AUTO_COMMIT_MS`` (and when it closes or gives up a partition). A
worker killed renders again what it did since its last commit; rendering is
deterministic (same request id, same bytes, same blob key) and the ledger ignores a
second outcome for a request, so a repeat changes nothing.

Work whose deadline has passed is not rendered: the client has been answered already,
and the ledger refunds it. A failure (an exception while rendering, or the AI pool's own
deadline) is reported as ``MemeFailed`` and the ledger refunds the token. So is AI work
that waited longer than ``ai_max_wait_ms`` since the ledger approved it (the record's
timestamp): the AI pool is the first to saturate, and without that bound its backlog
grows to the request deadline under overload and every new AI request waits behind it
afterwards. Failing the stale work costs the pool little, so it makes as many memes, and
the fresh ones in time. The wait counts from the pool's start if that is later: work that
arrived while the pool was restarting (a deploy, a crash) waited for the restart, not
behind the pool's own backlog, and is made (it still has its deadline).

Each job flows on its own, step by step (a pipeline, not batches: a batch waited for its
slowest meme and two broker round trips before the next began, and under load the AI
pool spent more time waiting than drawing, docs/capacity.md):

1. the main thread takes an approval whenever one of the ``concurrency`` render threads
   is free, so no job waits in a queue inside the process;
2. the render thread makes the meme and produces its outcome at once. An AI job has a
   deadline of its own, ``ai_generator_deadline_ms`` from its start: the backend gets
   what is left of it as its HTTP timeout, and a job still running at the deadline is
   reported ``MemeFailed`` by the main thread (its thread may still finish the call;
   the timeout bounds it). An AI caption blocked by the content policy is not drawn:
   the job renders the standard meme for its query instead (kind "standard");
3. the outcome's acknowledgement (on the delivery thread) sends the answer to the
   waiter of a meme made in time; the answer's acknowledgement, or the outcome's if
   there is no answer, ends the job and may move its partition's stored offset.

A delivery that fails for good ends the process (``processors.fatal``): the supervisor
starts a fresh one, which redoes what was not stored. A fatal consumer error (librdkafka
has one: a static member fenced, as every pool of a group was in a broker kill of the
fault runs, and as a pool stopped past its session is when it resumes) ends only the
pool: a fresh one rejoins in the same process (``run``), which keeps its loaded models
and its finished memes; a restart took 2-4 s and began with a cold cache. The
``MAX_FENCES``-th fence within ``FENCES_WINDOW_S`` ends the process instead: two pools
given one instance id would fence each other in turn, and the supervisor backs off a
crash loop and says so in its log. A fence that follows the pool's own lost broker
connection is not counted (``Fences``): every broker restart fences every pool once (its
session ran out while the broker was away), and three restarts in a minute are not twins.

With the offline backend the AI meme is a pure function of the request, like a standard
one. With an HTTP model a re-run after a crash may get other words from the model; the
ledger keeps the first outcome it receives, so the client still sees one meme.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from core.batching import IDLE_WAIT_S
from core.blobstore import BlobStore, make_blob_store
from core.broker_reach import LostBrokers
from core.clock import now_ms
from core.ids import stable_id
from core.readiness import mark_ready, take_over
from core.settings import Settings
from core.topics import ANSWERED_HEADER, CLIENT_PARTITION_HEADER, Topics, header_value
from memes import place, policy
from memes.render import RenderedMeme, finished_memes_cached, render_meme
from processors.fatal import FATAL_EXIT_CODE, is_fatal
from processors.generators.backends import (
    AiBackend,
    AiBackendError,
    AiBackendTimeout,
    make_ai_meme,
    make_backend,
)
from processors.generators.in_order import InOrder
from processors.watchdog import Watchdog
from schemas.events import Kind, MemeApproved, MemeFailed, MemeGenerated, Reply, dump

log = logging.getLogger("maas.generator")

# How often the group is told progress, so how much a killed worker does again: at
# 100/s 25 memes, a fraction of its restart; 4 commits a second instead of one a meme.
AUTO_COMMIT_MS = 250
# A pool stopped this long is out of its group: another pool takes its partitions.
SESSION_TIMEOUT_MS = 6_000
# A pool fenced this often within the window exits instead of rejoining. Twins (one
# instance id given twice) fence each other every few seconds (each learns it at its
# next heartbeat, every 3 s by librdkafka's default); the fault runs' broker kills
# fenced a pool twice within 10 s at most.
MAX_FENCES = 3
FENCES_WINDOW_S = 60.0

Delivered = Callable[[KafkaError | None, Message], None]


def membership(settings: Settings, kind: Kind) -> tuple[str, str]:
    """The consumer group of the pools of ``kind`` and this pool's static member id."""
    group = f"{settings.region}.generators.{kind}"
    return group, f"{group}.{settings.instance_id}"


class Fences:
    """A process's fences, for the twin rule: the ``MAX_FENCES``-th within
    ``FENCES_WINDOW_S`` suspects a twin, except fences within that window of the pool's
    own lost broker connection, which are not counted."""

    def __init__(self) -> None:
        self.counted: deque[float] = deque(maxlen=MAX_FENCES)

    def twin_suspected(self, now: float, lost_broker_at: float | None) -> bool:
        if lost_broker_at is not None and now - lost_broker_at < FENCES_WINDOW_S:
            return False
        self.counted.append(now)
        return len(self.counted) == MAX_FENCES and now - self.counted[0] < FENCES_WINDOW_S


class ConsumerFatal(KafkaException):
    """The pool's consumer can consume no more (fenced as a static member); a fresh
    consumer can rejoin its group."""


@dataclass(eq=False, slots=True)
class Job:
    partition: int
    offset: int
    approval: MemeApproved
    client_partition: int  # of the outcomes topic: the client's inputs' partition
    approved_at_ms: int | None  # the approval record's timestamp: when the ledger decided
    deadline: float | None  # time.monotonic() instant; the AI pool's own (step 2)
    settled: bool = False  # its outcome is produced: the first of render and deadline wins


class GeneratorPool:
    """One pool of one kind. ``consumer``, ``producer``, ``backend`` and ``blobs`` are
    built from settings unless given (tests pass in-memory ones)."""

    def __init__(
        self,
        settings: Settings,
        kind: Kind,
        *,
        consumer: Consumer | None = None,
        producer: Producer | None = None,
        backend: AiBackend | None = None,
        blobs: BlobStore | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.kind = kind
        self.topics = Topics(settings.region)
        self.work_topic = self.topics.approved(kind)
        self.blobs = blobs if blobs is not None else make_blob_store(settings)
        self.stop_event = stop_event or threading.Event()
        self.concurrency = (
            settings.ai_concurrency if kind == "ai" else settings.generator_concurrency
        )
        self.executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"gen-{kind}")
        self.free_threads = threading.Semaphore(self.concurrency)
        # Guards the offsets, the jobs' settled flags and the AI jobs still rendering.
        self.lock = threading.Lock()
        self.offsets = InOrder()
        self.to_store: dict[int, int] = {}  # partition -> offset, for the main thread
        self.rendering: set[Job] = set()  # AI jobs not settled yet, for the deadline watch
        self.failure: Exception | None = None  # from another thread: the main one raises it
        if kind == "ai":
            self.backend: AiBackend | None = backend or make_backend(settings)
        else:
            self.backend = None
        self.caption_threshold = settings.policy_caption_threshold
        # When its consumer last lost its broker: a fence soon after is its own
        # session's end, not a twin's join (Fences).
        self.lost_broker = LostBrokers(log)
        common = settings.kafka_common()
        group, member = membership(settings, kind)
        self.consumer = consumer or Consumer(
            {
                **common,
                "group.id": group,
                # Static membership: a pool killed and restarted takes its partitions
                # straight back. A new dynamic member would wait for the dead one's
                # session to expire first, and every request in between would time out.
                # Two pools of one kind need distinct instance ids (--instance-id).
                "group.instance.id": member,
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                # A loop that stops polling (every render thread stuck) gives up its
                # partitions to the other pools of its kind after this long (and its
                # watchdog ends it: processors/watchdog.py).
                "max.poll.interval.ms": settings.max_poll_interval_ms,
                "isolation.level": "read_committed",  # never render an aborted approval
                "enable.auto.commit": True,
                "auto.commit.interval.ms": AUTO_COMMIT_MS,
                "enable.auto.offset.store": False,  # stored after the outcomes are acked
                "auto.offset.reset": "earliest",
                # fetch.wait.max.ms stays at librdkafka's 500 ms: a fetch is a long poll
                # that the broker answers as soon as a record is there, so waiting costs
                # no latency, and a few ms would make the broker spin at idle.
                "error_cb": self.lost_broker.note,
            }
        )
        self.producer = producer or Producer(
            {**common, "enable.idempotence": True, "acks": "all", "linger.ms": 1}
        )
        # The AI pool has a deadline of its own: a slow model must not hold the token.
        self.render_timeout_s = settings.ai_generator_deadline_ms / 1000 if kind == "ai" else None
        # ... and a bound on how long its work may wait for a render thread (step 1).
        self.max_wait_ms = settings.ai_max_wait_ms if kind == "ai" else 0
        self.started_at_ms = now_ms()  # the wait bound counts from here at the earliest

    def run(self) -> None:
        # No rebalance callback: ``InOrder`` sees a partition taken again by its offsets
        # going back. (With one, this static member was fenced on rejoining after its
        # session timed out while the broker was away, in test_api_faults.)
        self.consumer.subscribe([self.work_topic])
        # A loop that stops polling (every render thread stuck) ends the process.
        watchdog = Watchdog(poll_limit_s=self.settings.max_poll_interval_ms / 1000)
        delivering = threading.Event()
        delivery = threading.Thread(
            target=self._serve_deliveries, args=(delivering,), name="deliveries", daemon=True
        )
        delivering.set()
        delivery.start()
        log.info(
            "generator pool started kind=%s concurrency=%d backend=%s",
            self.kind,
            self.concurrency,
            self.backend.name if self.backend else "-",
        )
        ready = self.settings.ready_file is None  # or no supervisor asked to be told
        try:
            while not self.stop_event.is_set():
                if self.failure is not None:
                    raise self.failure
                self._fail_overdue()
                self._store_offsets()
                wait_s = self._until_overdue_s()
                if not self.free_threads.acquire(timeout=wait_s):
                    continue
                with watchdog.polling():
                    message = self.consumer.poll(wait_s)
                if not ready and self.consumer.assignment():
                    mark_ready(self.settings.ready_file)  # holds partitions: it serves
                    ready = True
                if message is None or not self._start(message):
                    self.free_threads.release()
        finally:
            watchdog.close()
            # Jobs under way finish (an AI call within its timeout) and their outcomes
            # are delivered, so that closing commits as much as possible.
            self.executor.shutdown(wait=True)
            delivering.clear()
            delivery.join()
            self.producer.flush(10)
            self._store_offsets()
            self.consumer.close()
            hits, drawn = finished_memes_cached()
            log.info(
                "generator pool stopped kind=%s memes_from_cache=%d memes_drawn=%d",
                self.kind,
                hits,
                drawn,
            )

    def _serve_deliveries(self, delivering: threading.Event) -> None:
        try:
            while delivering.is_set():
                self.producer.poll(IDLE_WAIT_S)
        except Exception as exc:  # a callback's bug must stop the pool, not only this thread
            self._fail(exc)

    def _start(self, message: Message) -> bool:
        """Start rendering one approval on a free thread; False if none was started."""
        error = message.error()
        if error is not None:
            if is_fatal(error):
                raise ConsumerFatal(error)
            log.error("consume error=%s", error)
            return False
        partition, offset, value = message.partition(), message.offset(), message.value()
        if partition is None or offset is None or value is None:
            return False  # never so for a consumed record; the client's types allow it
        with self.lock:
            self.offsets.started(partition, offset)
        try:
            approval = MemeApproved.model_validate_json(value)
            client_partition = _client_partition(message, partition)
        except ValueError as exc:  # pydantic's ValidationError, or a header not a number
            log.error("invalid work partition=%d offset=%d error=%s", partition, offset, exc)
            self._done(partition, offset)  # never renderable: do not read it again
            return False
        deadline = (
            None if self.render_timeout_s is None else time.monotonic() + self.render_timeout_s
        )
        timestamp_type, timestamp = message.timestamp()
        approved_at_ms = None if timestamp_type == TIMESTAMP_NOT_AVAILABLE else timestamp
        job = Job(partition, offset, approval, client_partition, approved_at_ms, deadline)
        if deadline is not None:
            with self.lock:
                self.rendering.add(job)
        self.executor.submit(self._work, job)
        return True

    def _work(self, job: Job) -> None:
        """A render thread: make the meme, report it, free the thread."""
        try:
            outcome = self._make(job)
        except AiBackendError as exc:
            outcome = _failed(job.approval, f"ai backend: {type(exc).__name__}: {exc}"[:500])
        except Exception as exc:  # any rendering bug is the client's refund, not a crash
            log.exception("render failed request_id=%s", job.approval.request_id)
            outcome = _failed(job.approval, f"{type(exc).__name__}: {exc}"[:500])
        try:
            self._settle(job, outcome)
        finally:
            self.free_threads.release()

    def _until_overdue_s(self) -> float:
        """How long the main thread may block: until the first AI deadline (step 2)."""
        if self.render_timeout_s is None:
            return IDLE_WAIT_S
        with self.lock:
            deadlines = [job.deadline for job in self.rendering if job.deadline is not None]
        if not deadlines:
            return IDLE_WAIT_S
        return min(IDLE_WAIT_S, max(0.001, min(deadlines) - time.monotonic()))

    def _fail_overdue(self) -> None:
        """The AI pool's deadline (step 2): a job still rendering is reported failed."""
        if self.render_timeout_s is None:
            return
        now = time.monotonic()
        with self.lock:
            late = [
                job for job in self.rendering if job.deadline is not None and job.deadline <= now
            ]
        for job in late:
            self._settle(job, _failed(job.approval, f"{self.kind} generator exceeded its deadline"))

    def _settle(self, job: Job, outcome: MemeGenerated | MemeFailed) -> None:
        """Produce the job's outcome, once: the render and the deadline watch may race."""
        with self.lock:
            if job.settled:
                return
            job.settled = True
            self.rendering.discard(job)
        approval = job.approval
        if isinstance(outcome, MemeFailed):
            # The client's 502 and refund: the reason is otherwise only in the outcomes topic.
            log.warning(
                "meme failed, the ledger refunds it request_id=%s kind=%s error=%s",
                approval.request_id,
                self.kind,
                outcome.error,
            )
        told = _made_reply(approval, outcome) if isinstance(outcome, MemeGenerated) else None

        def acknowledged(err: KafkaError | None, _: Message) -> None:
            if err is not None:
                self._fail(err)
                return
            if told is None:
                self._done(job.partition, job.offset)
                return
            # Only once its outcome is in the log is a meme told to its client: a 200 is
            # then always a MemeGenerated that the ledger will fold (a restart renders it
            # again).
            reply_to, reply = told
            self._produce(
                self.topics.replies, reply.correlation_id, dump(reply), reply_to, answered
            )

        def answered(err: KafkaError | None, _: Message) -> None:
            if err is not None:
                self._fail(err)
            else:
                self._done(job.partition, job.offset)

        # An outcome this pool answers needs no prompt settlement: the header says so.
        self._produce(
            self.topics.outcomes,
            approval.client_id,
            dump(outcome),
            job.client_partition,
            acknowledged,
            headers=None if told is None else {ANSWERED_HEADER: b"1"},
        )

    def _produce(
        self,
        topic: str,
        key: str,
        value: bytes,
        partition: int,
        on_delivery: Delivered,
        headers: dict[str, str | bytes | None] | None = None,
    ) -> None:
        """A record whose job waits for its acknowledgement: if it cannot even be queued,
        the job would wait forever (and its partition's offsets with it), so the pool
        stops instead."""
        try:
            self.producer.produce(
                topic,
                key=key.encode(),
                value=value,
                partition=partition,
                on_delivery=on_delivery,
                headers=headers,
            )
        except (BufferError, KafkaException) as exc:
            self._fail(exc)

    def _done(self, partition: int, offset: int) -> None:
        with self.lock:
            to_store = self.offsets.done(partition, offset)
            if to_store is not None:
                self.to_store[partition] = to_store

    def _store_offsets(self) -> None:
        """The main thread stores what the jobs done allow. From another thread,
        ``store_offsets`` blocked for seconds while the group rejoined (after a broker
        restart), and every acknowledgement behind it waited."""
        with self.lock:
            ready, self.to_store = self.to_store, {}
        if not ready:
            return
        offsets = [TopicPartition(self.work_topic, p, offset) for p, offset in ready.items()]
        try:
            self.consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._STATE:
                raise
            # A partition was revoked meanwhile: the new owner starts from the last
            # commit and makes these outcomes again, which the ledger ignores.
            log.info("offsets not stored, a partition moved partitions=%s", sorted(ready))

    def _fail(self, failure: Exception | KafkaError) -> None:
        if isinstance(failure, KafkaError):
            failure = KafkaException(failure)
        log.error("stopping so that the work is redone error=%r", failure)
        with self.lock:
            self.failure = self.failure or failure

    def _make(self, job: Job) -> MemeGenerated | MemeFailed:
        approval = job.approval
        now = now_ms()
        if now > approval.deadline_ms:
            return _failed(approval, "deadline passed before generation")
        if self.max_wait_ms and job.approved_at_ms is not None:
            waited_ms = now - max(job.approved_at_ms, self.started_at_ms)
            if waited_ms > self.max_wait_ms:
                return _failed(
                    approval,
                    f"waited {waited_ms} ms for the {self.kind} pool (limit {self.max_wait_ms})",
                )
        fault = self.settings.fault_injection_query
        if fault and fault in approval.query:
            raise RuntimeError("fault injected by settings.fault_injection_query")
        meme = self._render(approval, job.deadline)
        image_key = self.blobs.put(meme.png, "png")
        made_at_ms = now_ms()
        return MemeGenerated(
            event_id=stable_id(f"generated:{approval.request_id}"),
            client_id=approval.client_id,
            region=approval.region,
            occurred_at_ms=made_at_ms,
            causation_id=approval.request_id,
            request_id=approval.request_id,
            meme_id=meme.meme_id,
            kind=meme.kind,  # "standard" when a blocked AI caption fell back (step 2)
            template=meme.template,
            caption=meme.caption,
            image_key=image_key,
            replied_to=self._answerable(approval, made_at_ms),
        )

    def _answerable(self, job: MemeApproved, made_at_ms: int) -> str | None:
        """The waiter this pool answers itself: only for a meme made by the deadline (the
        ledger delivers exactly those, judged by this event time), and only if the
        approval names it (an approval of an older processor does not)."""
        if made_at_ms > job.deadline_ms or job.reply_to is None:
            return None
        if job.reply_to >= self.settings.reply_partitions:
            log.error("reply_to out of range reply_to=%d", job.reply_to)
            return None
        return job.correlation_id

    def _render(self, job: MemeApproved, deadline: float | None) -> RenderedMeme:
        if job.kind != "ai" or self.backend is None or deadline is None:
            return render_meme(job.request_id, job.query, job.lat, job.lon, job.kind)
        timeout_s = deadline - time.monotonic()
        if timeout_s <= 0:
            raise AiBackendTimeout("the AI pool's deadline passed before the job started")
        outcome = make_ai_meme(
            self.backend,
            job.request_id,
            job.query,
            job.lat,
            job.lon,
            timeout_s=timeout_s,
            caption_threshold=self.caption_threshold,
        )
        return outcome.meme


def _made_reply(job: MemeApproved, meme: MemeGenerated) -> tuple[int, Reply] | None:
    """The answer to the waiter ``_answerable`` named, on the partition it reads."""
    if meme.replied_to is None or job.reply_to is None:
        return None
    return job.reply_to, Reply(
        correlation_id=meme.replied_to,
        outcome="made",
        balance=job.balance_after,
        tokens_charged=job.tokens,
        made=meme,  # with its caption: not repeated in the reply's own ``caption``
    )


def _failed(job: MemeApproved, error: str) -> MemeFailed:
    return MemeFailed(
        event_id=stable_id(f"failed:{job.request_id}"),
        client_id=job.client_id,
        region=job.region,
        occurred_at_ms=now_ms(),
        causation_id=job.request_id,
        request_id=job.request_id,
        kind=job.kind,
        error=error,
    )


def warm_up(kind: Kind) -> None:
    """The process's one-off loads (the place index and, for AI captions, the policy
    model: about a second together here, up to 6 s on a slow host), before its pool takes
    work. A pool that took work first drew nothing until they were done, so it said it
    served when it did not, and the AI pool's wait bound, counting from the pool's start,
    failed the work that had arrived during its restart."""
    for load in (place.warm_up, policy.warm_up) if kind == "ai" else (place.warm_up,):
        load()
    # What exists now lives as long as the process. Frozen, a full collection no longer
    # walks it: under overload such collections had paused a pool for up to 160 ms (a
    # gc.callbacks probe), as they had the API (api/app.py).
    gc.freeze()


def run(settings: Settings, kind: Kind) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    warm_up(kind)
    take_over(settings.ready_file, settings.predecessor_pid)  # its group membership
    # Made once: a pool that rejoins after a fence keeps its backend's connections.
    backend = make_backend(settings) if kind == "ai" else None
    blobs = make_blob_store(settings)
    fences = Fences()
    while not stop.is_set():
        pool = GeneratorPool(settings, kind, backend=backend, blobs=blobs, stop_event=stop)
        try:
            pool.run()
        except ConsumerFatal as exc:
            if fences.twin_suspected(time.monotonic(), pool.lost_broker.at):
                log.critical(
                    "consumer fenced %d times within %.0f s, exiting (is another pool running "
                    "with instance id %s?) error=%s",
                    MAX_FENCES,
                    FENCES_WINDOW_S,
                    settings.instance_id,
                    exc.args[0],
                )
                raise SystemExit(FATAL_EXIT_CODE) from exc
            # What it had not stored is redone by the partitions' next owner.
            log.warning("consumer fenced, rejoining with a fresh one error=%s", exc.args[0])
        except KafkaException as exc:
            # An outcome the broker never took: a fresh process redoes what was not
            # stored, and the supervisor starts one.
            log.critical("fatal kafka error, exiting error=%s", exc.args[0])
            raise SystemExit(FATAL_EXIT_CODE) from exc


def _client_partition(message: Message, partition: int) -> int:
    """Where the approval's outcome goes: the partition its header names. An approval
    without it was written before approvals were spread (by a processor of an older
    version, during a rolling deploy), on its client's own partition."""
    value = header_value(message, CLIENT_PARTITION_HEADER)
    return partition if value is None else int(value)
