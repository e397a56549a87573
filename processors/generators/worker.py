"""A generator pool: consumes approved work of one kind, makes the meme, reports the outcome.

Standard and AI work live on separate topics with separate consumer groups, so a slow AI
backlog never queues ahead of standard memes. Delivery is at least once: offsets are
committed only after the batch's outcomes are acknowledged by the broker. A worker killed
mid-batch renders some requests again; rendering is deterministic (same request id, same
bytes, same blob key) and the ledger ignores a second outcome for a request, so a
repeat changes nothing.

Work whose deadline has passed is not rendered: the client has been answered already,
and the ledger refunds it. A failure (an exception while rendering, or the AI pool's own
deadline) is reported as ``MemeFailed`` and the ledger refunds the token.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Message, Producer
from pydantic import ValidationError

from maas.settings import Settings
from maas.topics import Topics
from processors.batching import take_batch
from processors.generators.blobstore import LocalBlobStore
from processors.generators.render import render_meme
from schemas.events import Kind, MemeApproved, MemeFailed, MemeGenerated, dump

log = logging.getLogger("maas.generator")

COMMIT_ATTEMPTS = 50


class GeneratorPool:
    def __init__(self, settings: Settings, kind: Kind) -> None:
        self.settings = settings
        self.kind = kind
        self.topics = Topics(settings.region)
        self.blobs = LocalBlobStore(Path(settings.data_dir) / "blobs")
        self.stop_event = threading.Event()
        self.executor = ThreadPoolExecutor(
            settings.generator_concurrency, thread_name_prefix=f"gen-{kind}"
        )
        common = settings.kafka_common()
        self.consumer = Consumer(
            {
                **common,
                "group.id": f"{settings.region}.generators.{kind}",
                "isolation.level": "read_committed",  # never render an aborted approval
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 5,
            }
        )
        self.producer = Producer(
            {**common, "enable.idempotence": True, "acks": "all", "linger.ms": 1}
        )
        # The AI pool has a deadline of its own: a slow model must not hold the token.
        self.render_timeout_s = settings.ai_generator_deadline_ms / 1000 if kind == "ai" else None

    def run(self) -> None:
        self.consumer.subscribe([self.topics.approved(self.kind)])
        log.info(
            "generator pool started kind=%s concurrency=%d",
            self.kind,
            self.settings.generator_concurrency,
        )
        try:
            while not self.stop_event.is_set():
                messages = take_batch(self.consumer, self.settings.generator_concurrency * 4, 0.1)
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
            try:
                work.append((msg.partition(), MemeApproved.model_validate_json(msg.value())))
            except ValidationError as exc:
                log.error("invalid work offset=%d error=%s", msg.offset(), exc.errors()[:3])
        futures = [(p, job, self.executor.submit(self._make, job)) for p, job in work]
        for partition, job, future in futures:
            try:
                outcome = future.result(timeout=self.render_timeout_s)
            except FutureTimeout:
                outcome = _failed(job, f"{self.kind} generator exceeded its deadline")
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
        if self.producer.flush(30) > 0:
            raise KafkaException("outcomes not acknowledged; offsets not committed")
        self._commit_offsets()

    def _commit_offsets(self) -> None:
        """Retry what is retriable (a coordinator moving after a broker restart); anything
        else ends the process, and the work is done again after the restart."""
        for _ in range(COMMIT_ATTEMPTS - 1):
            try:
                self.consumer.commit(asynchronous=False)
                return
            except KafkaException as exc:
                if not exc.args[0].retriable():
                    raise
                log.warning("offset commit retry error=%s", exc.args[0])
                time.sleep(0.2)
        self.consumer.commit(asynchronous=False)

    def _make(self, job: MemeApproved) -> MemeGenerated | MemeFailed:
        if _now_ms() > job.deadline_ms:
            return _failed(job, "deadline passed before generation")
        fault = self.settings.fault_injection_query
        if fault and fault in job.query:
            raise RuntimeError("fault injected by settings.fault_injection_query")
        meme = render_meme(job.request_id, job.query, job.lat, job.lon, job.kind)
        image_key = self.blobs.put(meme.png, "png")
        return MemeGenerated(
            event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"maas:generated:{job.request_id}").hex,
            client_id=job.client_id,
            region=job.region,
            occurred_at_ms=_now_ms(),
            causation_id=job.request_id,
            request_id=job.request_id,
            meme_id=meme.meme_id,
            kind=job.kind,
            template=meme.template,
            caption=meme.caption,
            image_key=image_key,
        )


def _failed(job: MemeApproved, error: str) -> MemeFailed:
    return MemeFailed(
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"maas:failed:{job.request_id}").hex,
        client_id=job.client_id,
        region=job.region,
        occurred_at_ms=_now_ms(),
        causation_id=job.request_id,
        request_id=job.request_id,
        kind=job.kind,
        error=error,
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def run(settings: Settings, kind: Kind) -> None:
    pool = GeneratorPool(settings, kind)
    signal.signal(signal.SIGTERM, lambda *_: pool.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: pool.stop_event.set())
    pool.run()
