"""A generator pool: consumes approved work of one kind, makes the meme, reports the outcome.

A meme made by its deadline is also told to the API that waits for it (outcome "made",
on the reply partition the approval names), once its ``MemeGenerated`` is acknowledged:
the client does not wait for the ledger's second transaction. The ledger delivers that
meme, judged by the same event time, and answers only the other waiters (retries).

Standard and AI work live on separate topics with separate consumer groups, so a slow AI
backlog never queues ahead of standard memes. Delivery is at least once: a batch's
offsets are stored only after its outcomes are acknowledged by the broker, and the
consumer commits what is stored every ``AUTO_COMMIT_MS`` (and when it closes or gives up
a partition). A commit per batch was a broker request per meme or two at 100/s, and a
round trip during which nothing rendered. A worker killed renders again what it did
since its last commit (at most ``AUTO_COMMIT_MS`` of work); rendering is deterministic
(same request id, same bytes, same blob key) and the ledger ignores a second outcome for
a request, so a repeat changes nothing.

Work whose deadline has passed is not rendered: the client has been answered already,
and the ledger refunds it. A failure (an exception while rendering, or the AI pool's own
deadline) is reported as ``MemeFailed`` and the ledger refunds the token.

The AI pool, step by step:

1. take at most ``ai_concurrency`` approvals (one batch), so every job starts at once
   on its own thread and none waits in the executor's queue;
2. give the batch one deadline, now + ``ai_generator_deadline_ms``; each job asks the
   AI backend for a caption with whatever is left of it as the HTTP timeout;
3. screen the caption with the content policy: a blocked caption is not drawn, the job
   renders the standard meme for its query instead (kind "standard");
4. a job not finished by the deadline, or whose backend failed, becomes ``MemeFailed``
   (refund). Its thread may still be finishing an HTTP call; the timeout bounds it.

With the offline backend the AI meme is a pure function of the request, like a
standard one. With an HTTP model a re-run after a crash may get other words from the
model; the ledger keeps the first outcome it receives, so the client still sees one meme.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from pydantic import ValidationError

from core.blobstore import BlobStore, make_blob_store
from core.clock import now_ms
from core.ids import stable_id
from core.settings import Settings
from core.topics import Topics
from memes import place, policy
from memes.render import RenderedMeme, render_meme
from processors.batching import take_batch
from processors.generators.backends import (
    AiBackend,
    AiBackendError,
    AiBackendTimeout,
    make_ai_meme,
    make_backend,
)
from schemas.events import Kind, MemeApproved, MemeFailed, MemeGenerated, Reply, dump

log = logging.getLogger("maas.generator")

# How often the group is told progress, so how much a killed worker does again: at
# 100/s 25 memes, a fraction of its restart; 4 commits a second instead of one a batch.
AUTO_COMMIT_MS = 250


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
    ) -> None:
        self.settings = settings
        self.kind = kind
        self.topics = Topics(settings.region)
        self.blobs = blobs if blobs is not None else make_blob_store(settings)
        self.stop_event = threading.Event()
        # settings.ai_concurrency (to become a real field): AI calls in flight at once.
        self.concurrency = (
            settings.ai_concurrency if kind == "ai" else settings.generator_concurrency
        )
        # The AI pool takes one job per thread (step 1); standard work batches deeper.
        self.batch_size = self.concurrency if kind == "ai" else self.concurrency * 4
        self.executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"gen-{kind}")
        if kind == "ai":
            self.backend: AiBackend | None = backend or make_backend(settings)
        else:
            self.backend = None
        self.caption_threshold = settings.policy_caption_threshold
        common = settings.kafka_common()
        self.consumer = consumer or Consumer(
            {
                **common,
                "group.id": f"{settings.region}.generators.{kind}",
                # Static membership: a pool killed and restarted takes its partitions
                # straight back. A new dynamic member would wait for the dead one's
                # session to expire first, and every request in between would time out.
                # Two pools of one kind need distinct instance ids (--instance-id).
                "group.instance.id": f"{settings.region}.generators.{kind}.{settings.instance_id}",
                "session.timeout.ms": 6_000,
                "isolation.level": "read_committed",  # never render an aborted approval
                "enable.auto.commit": True,
                "auto.commit.interval.ms": AUTO_COMMIT_MS,
                "enable.auto.offset.store": False,  # stored after the outcomes are acked
                "auto.offset.reset": "earliest",
                # fetch.wait.max.ms stays at librdkafka's 500 ms: a fetch is a long poll
                # that the broker answers as soon as a record is there, so waiting costs
                # no latency, and a few ms would make the broker spin at idle.
            }
        )
        self.producer = producer or Producer(
            {**common, "enable.idempotence": True, "acks": "all", "linger.ms": 1}
        )
        # The AI pool has a deadline of its own: a slow model must not hold the token.
        self.render_timeout_s = settings.ai_generator_deadline_ms / 1000 if kind == "ai" else None

    def run(self) -> None:
        # The one-off loads (place index ~2 s, policy model ~4 s) run while the consumer
        # joins its group; a render that needs one before it is ready waits for it.
        for load in (place.warm_up, policy.warm_up) if self.kind == "ai" else (place.warm_up,):
            threading.Thread(target=load, name=f"warm-{load.__module__}", daemon=True).start()
        self.consumer.subscribe([self.topics.approved(self.kind)])
        log.info(
            "generator pool started kind=%s concurrency=%d backend=%s",
            self.kind,
            self.concurrency,
            self.backend.name if self.backend else "-",
        )
        try:
            while not self.stop_event.is_set():
                messages = take_batch(self.consumer, self.batch_size, 0.1)
                if messages:
                    self._handle(messages)
        finally:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.consumer.close()
            self.producer.flush(10)
            log.info("generator pool stopped kind=%s", self.kind)

    def _handle(self, messages: list[Message]) -> None:
        work: list[tuple[int, MemeApproved]] = []
        for msg in messages:
            if msg.error():
                log.error("consume error=%s", msg.error())
                continue
            partition, value = msg.partition(), msg.value()
            if partition is None or value is None:
                continue  # never so for a consumed record; the client's types allow it
            try:
                work.append((partition, MemeApproved.model_validate_json(value)))
            except ValidationError as exc:
                log.error("invalid work offset=%d error=%s", msg.offset(), exc.errors()[:3])
        # One deadline for the whole batch (AI pool step 2); None for the standard pool.
        deadline = (
            time.monotonic() + self.render_timeout_s if self.render_timeout_s is not None else None
        )
        futures = [(p, job, self.executor.submit(self._make, job, deadline)) for p, job in work]
        made: list[tuple[int, Reply]] = []  # (reply partition, answer) of memes made in time
        for partition, job, future in futures:
            try:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                outcome = future.result(timeout=remaining)
            except FutureTimeout:
                outcome = _failed(job, f"{self.kind} generator exceeded its deadline")
            except AiBackendError as exc:
                log.warning("ai backend failed request_id=%s error=%s", job.request_id, exc)
                outcome = _failed(job, f"ai backend: {type(exc).__name__}: {exc}"[:500])
            except Exception as exc:  # any rendering bug is the client's refund, not a crash
                log.exception("render failed request_id=%s", job.request_id)
                outcome = _failed(job, f"{type(exc).__name__}: {exc}"[:500])
            # Same partition number as the approval: the outcomes topic is co-partitioned.
            self.producer.produce(
                self.topics.outcomes,
                key=job.client_id.encode(),
                value=dump(outcome),
                partition=partition,
            )
            if isinstance(outcome, MemeGenerated) and (told := _made_reply(job, outcome)):
                made.append(told)
        if self.producer.flush(30) > 0:
            raise KafkaException("outcomes not acknowledged; offsets not stored")
        # Only once its outcome is in the log is a meme told to its client: a 200 is then
        # always a MemeGenerated that the ledger will fold (a restart renders it again).
        for reply_to, reply in made:
            self.producer.produce(
                self.topics.replies,
                key=reply.correlation_id.encode(),
                value=dump(reply),
                partition=reply_to,
            )
        if made and self.producer.flush(30) > 0:
            raise KafkaException("replies not acknowledged; offsets not stored")
        for message in messages:
            if message.error() is None:
                self._store_offset(message)

    def _store_offset(self, message: Message) -> None:
        try:
            self.consumer.store_offsets(message=message)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._STATE:
                raise
            # Its partition was revoked during the batch: the new owner starts from the
            # last commit and makes this outcome again, which the ledger ignores.
            log.info("offset not stored, partition %s moved", message.partition())

    def _make(self, job: MemeApproved, deadline: float | None) -> MemeGenerated | MemeFailed:
        if now_ms() > job.deadline_ms:
            return _failed(job, "deadline passed before generation")
        fault = self.settings.fault_injection_query
        if fault and fault in job.query:
            raise RuntimeError("fault injected by settings.fault_injection_query")
        meme = self._render(job, deadline)
        image_key = self.blobs.put(meme.png, "png")
        made_at_ms = now_ms()
        return MemeGenerated(
            event_id=stable_id(f"generated:{job.request_id}"),
            client_id=job.client_id,
            region=job.region,
            occurred_at_ms=made_at_ms,
            causation_id=job.request_id,
            request_id=job.request_id,
            meme_id=meme.meme_id,
            kind=meme.kind,  # "standard" when a blocked AI caption fell back (step 3)
            template=meme.template,
            caption=meme.caption,
            image_key=image_key,
            replied_to=self._answerable(job, made_at_ms),
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
        if job.kind != "ai" or self.backend is None:
            return render_meme(job.request_id, job.query, job.lat, job.lon, job.kind)
        timeout_s = self.render_timeout_s if deadline is None else deadline - time.monotonic()
        if timeout_s is None or timeout_s <= 0:
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
        caption=meme.caption,
        tokens_charged=job.tokens,
        made=meme,
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


def run(settings: Settings, kind: Kind) -> None:
    pool = GeneratorPool(settings, kind)
    signal.signal(signal.SIGTERM, lambda *_: pool.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: pool.stop_event.set())
    pool.run()
