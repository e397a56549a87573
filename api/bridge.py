"""The API's only door to Kafka: append an input event, wait for its ``Reply``.

Request/reply over a log, in numbered steps (``KafkaBridge.call``):

1. register a future under the event's ``event_id`` (the reply's ``correlation_id``)
   *before* producing, so that a reply can never arrive unclaimed;
2. produce the event (key = client_id) with ``acks=all`` and the idempotent producer;
3. wait for the reply until the request's deadline; the ledger processor writes it to
   partition ``reply_to`` (= ``settings.api_instance``) of ``<region>.replies``. A
   reply can only follow a delivered event, so a success's delivery report need not
   wake the loop (one wake-up per call, not two); a delivery that failed for sure ends
   the wait with ``KafkaUnavailable`` (HTTP 503);
4. no reply by the deadline: wait for the delivery report too, never less, so that
   the client is told nothing before the event is in the log or librdkafka has given
   up on it: delivered, ``None`` (the routes answer 504); not, ``KafkaUnavailable``;
5. drop the future. A reply that comes later finds no future and is ignored.

Each API instance reads only its own reply partition (group-less ``assign``), so
routing costs nothing per instance however many instances run. The consumer starts at
the partition's end offset, resolved explicitly at start-up: an ``OFFSET_END`` left
for the first fetch to resolve could skip replies to requests sent in between.
The reply consumer long-polls (librdkafka's default ``fetch.wait.max.ms`` of 500 ms):
the broker answers a fetch as soon as a reply is there, so the wait costs no latency,
and polling every few ms would only keep the broker busy at idle.

Failure scenarios:

- broker down at start-up: the reply thread asks again, each time with a fresh client
  (``core.watermarks``); until it is positioned the bridge is not ready and calls
  answer ``NotReady`` (503) instead of waiting blind;
- a reply consumer that stops fetching (an assigned partition's consumer can, after a
  broker restart, until it is recreated: librdkafka #5153): committed replies past its
  position at two looks ``REPLY_STALL_S`` apart, with nothing read, and it is rebuilt at
  its position;
- broker down later: produce keeps retrying inside librdkafka until
  ``message.timeout.ms`` (= the request deadline), then the delivery report fails. The
  bridge waits for that report, never less, so librdkafka cannot deliver an event
  after its caller was told 503. A message that timed out while in flight may still be
  in the log; its reply is then waited for until the call's deadline, and answered if it
  comes; otherwise 503, naming the request so that it can be looked up or retried;
- every broker down (``api.outage``): once none listens or a metadata request goes
  unanswered, calls are refused at once with 503 before anything is appended, until a
  broker answers again;
- delivered but no reply (processor down or slow): the caller gets ``None`` at the
  deadline; the ledger refunds the charge if no meme is made in time, and the client
  can ask ``GET /v1/requests/{id}`` or retry with the same ``Idempotency-Key``.

Threads: librdkafka callbacks and the reply consumer run in two daemon threads; they
hand results to the event loop only through ``loop.call_soon_threadsafe``, so the
dictionary of waiting futures is touched by the loop thread alone (no locks). The one
thing both sides touch is a call's ``_Delivery`` record (its docstring says why that
needs no lock).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from pydantic import ValidationError

from api.errors import KafkaUnavailable, NotReady, Overloaded, TooManyRequests
from api.metrics import Metrics
from api.outage import KafkaOutage
from core.batching import IDLE_WAIT_S, take_batch
from core.broker_reach import any_broker_listens
from core.clock import now_ms
from core.settings import Settings
from core.topics import READS_HEADER, Topics, key_partition
from core.watermarks import WatermarkAsker
from schemas.events import (
    AccountQueried,
    Envelope,
    ErasureRequested,
    Reply,
    RequestQueried,
    dump,
)

log = logging.getLogger(__name__)

READY_MAX_LAG = 1000  # ledger consumer lag above which this instance reports not ready
KAFKA_PROBE_TIMEOUT_S = 2.0
# How long the producer's thread waits for a broker's connection, then its answer, while
# every connection is down (``api.outage``); delivery reports wait as long meanwhile.
OUTAGE_LOOK_TIMEOUT_S = 1.0
OUTAGE_ASK_S = 0.2  # one metadata request of a look, repeated within its timeout
REPLIES_END_QUERY_S = 2.0
# Idle this long, the reply consumer looks whether committed replies lie past it (one
# offsets query to the broker); behind at two looks in a row, it is rebuilt.
REPLY_STALL_S = 1.0
# librdkafka reports every message by message.timeout.ms; this only guards against a
# report that never comes (a bug), so that no request waits forever.
DELIVERY_REPORT_SLACK_S = 5.0
# Inputs whose answer reads the ledger's state of a client: marked, so that the ledger
# settles the memes it holds first (processors/ledger/settlements.py).
READS = (AccountQueried, RequestQueried, ErasureRequested)


def producer_config(settings: Settings) -> dict[str, Any]:
    """The API instance's producer of input events."""
    return {
        **settings.kafka_common(),
        "client.id": f"maas-api-{settings.region}-{settings.api_instance}",
        "acks": "all",
        "enable.idempotence": True,
        # A request waits for its delivery report: batching longer than a
        # millisecond or two only adds latency.
        "linger.ms": 1,
        # Give up on a message when its request has given up on it.
        "message.timeout.ms": settings.request_deadline_ms,
        "socket.nagle.disable": True,
    }


def reply_consumer_config(settings: Settings) -> dict[str, Any]:
    """The consumer of the instance's reply partition (``settings.api_instance``)."""
    return {
        **settings.kafka_common(),
        # Required by the client, never joined: the partition is assigned, and
        # no offset is ever committed.
        "group.id": f"{settings.region}.api-{settings.api_instance}.replies",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "latest",
        "fetch.min.bytes": 1,
        "fetch.error.backoff.ms": 50,
        "socket.nagle.disable": True,
    }


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    checks: dict[str, Any] = field(default_factory=dict)


class KafkaBridge:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.topics = Topics(settings.region)
        self.metrics = metrics
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        self._waiting_in: collections.Counter[int] = collections.Counter()  # by partition
        self._waiting_of: collections.Counter[str] = collections.Counter()  # by client id
        metrics.waiting.set_function(lambda: len(self._waiting))  # read at scrape time
        self._stopping = threading.Event()
        self._replies_positioned = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outage = KafkaOutage()
        metrics.kafka_unreachable.set_function(lambda: float(self._outage.down))
        self._producer = Producer({**producer_config(settings), "error_cb": self._outage.lost.note})
        self._probe: Consumer | None = None  # built by the first readiness probe
        self._probe_lock = threading.Lock()

    # --- life cycle ----------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for target, name in ((self._poll_producer, "producer"), (self._consume_replies, "replies")):
            thread = threading.Thread(target=target, name=f"maas-api-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, flush_timeout_s: float = 5.0) -> None:
        # Flush first: events already accepted must reach the log before we exit.
        remaining = self._producer.flush(flush_timeout_s)
        if remaining:
            log.warning("producer closed with undelivered events count=%d", remaining)
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)
        # close() would wait for what the flush could not deliver, without a bound (a
        # dead broker: forever); given up first, it releases librdkafka's threads and
        # sockets at once instead of at the process's exit.
        self._producer.purge()
        self._producer.close()
        with self._probe_lock:
            self._drop_probe()

    @property
    def replies_positioned(self) -> bool:
        return self._replies_positioned.is_set()

    def wait_positioned(self, timeout_s: float) -> bool:
        """Block until the reply consumer is positioned, at most ``timeout_s``."""
        return self._replies_positioned.wait(timeout_s)

    # --- request / reply -------------------------------------------------------------

    def envelope(self, client_id: str) -> dict[str, Any]:
        """The fields every input event of this instance carries, the reply's partition
        (``reply_to``) included: every event the API appends waits for its reply."""
        return {
            "event_id": uuid.uuid4().hex,
            "client_id": client_id,
            "region": self.settings.region,
            "occurred_at_ms": now_ms(),
            "reply_to": self.settings.api_instance,
        }

    @property
    def full(self) -> bool:
        """As many calls wait on the ledger as this process admits (``api_max_in_flight``).

        Admission control: past this, more waiting only lengthens every queue behind the
        API until requests miss their deadlines (goodput collapses)."""
        return len(self._waiting) >= self.settings.api_max_in_flight

    def refuse(self) -> Overloaded:
        """Count a call refused while ``full`` and return its answer: refused before
        anything is appended, so nothing is charged."""
        self.metrics.overloaded.labels(limit="all").inc()
        return Overloaded(
            f"{len(self._waiting)} requests are waiting on the ledger; retry after "
            "Retry-After seconds"
        )

    def _refuse_partition(self, partition: int) -> Overloaded:
        """The same refusal, for a partition holding its share of the limit: it is slow
        or stalled, and the other partitions' clients keep the rest."""
        self.metrics.overloaded.labels(limit="partition").inc()
        return Overloaded(
            f"{self._waiting_in[partition]} requests of clients on this client's partition "
            "are waiting on the ledger; retry after Retry-After seconds"
        )

    def _refuse_client(self, client_id: str) -> TooManyRequests:
        """The refusal of a client that holds its own share: one client's burst leaves
        room for the other clients of its partition."""
        self.metrics.overloaded.labels(limit="client").inc()
        return TooManyRequests(
            f"{self._waiting_of[client_id]} requests of this client are waiting on the "
            "ledger; retry after Retry-After seconds"
        )

    def deadline_ms(self) -> int:
        return now_ms() + self.settings.request_deadline_ms

    async def call(
        self, topic: str, event: Envelope, deadline_ms: int | None = None
    ) -> Reply | None:
        """Append ``event`` and wait for its reply; ``None`` if none came by the deadline
        (by default the request deadline from now)."""
        if deadline_ms is None:
            deadline_ms = self.deadline_ms()
        if not self.replies_positioned:
            raise NotReady("reply consumer is not positioned yet")
        if self._outage.down:
            raise KafkaUnavailable(
                "no Kafka broker answers this API process; nothing was appended: retry "
                "after Retry-After seconds",
                kafka_code="_ALL_BROKERS_DOWN",
            )
        if self.full:
            raise self.refuse()
        client_id = event.client_id
        if self._waiting_of[client_id] >= self.settings.api_max_in_flight_per_client:
            raise self._refuse_client(client_id)
        partition = key_partition(client_id.encode(), self.settings.partitions)
        if self._waiting_in[partition] >= self.settings.api_max_in_flight_per_partition:
            raise self._refuse_partition(partition)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        self._waiting[event.event_id] = future
        self._waiting_in[partition] += 1
        self._waiting_of[client_id] += 1
        try:
            delivery = self._produce(loop, topic, event, future)
            try:
                # A reply can only follow a delivered event; a failed delivery ends the
                # wait with KafkaUnavailable.
                return await asyncio.wait_for(future, timeout=_seconds_until(deadline_ms))
            except TimeoutError:
                pass
            await delivery.reported(loop)
            if delivery.error is not None:
                # No reply and not delivered (one that timed out in flight may still be
                # in the log: the client is told so, with the request's id).
                raise KafkaUnavailable(delivery.error.str(), kafka_code=delivery.error.name())
            return None
        finally:
            self._waiting.pop(event.event_id, None)
            self._waiting_in[partition] -= 1
            self._waiting_of[client_id] -= 1
            if not self._waiting_of[client_id]:
                del self._waiting_of[client_id]  # else it keeps every client it saw

    def _produce(
        self,
        loop: asyncio.AbstractEventLoop,
        topic: str,
        event: Envelope,
        reply: asyncio.Future[Reply],
    ) -> _Delivery:
        """Produce ``event``; a delivery that failed for sure fails ``reply``.

        A message that timed out in flight may still be in the log (librdkafka cannot
        tell): then the ledger's reply is the truth, so it is waited for until the
        deadline before saying "unavailable". A success wakes the loop only if the call
        waits for it (``_Delivery.reported``): the reply wakes it anyway.
        """
        delivery = _Delivery(
            time.monotonic() + self.settings.request_deadline_ms / 1000 + DELIVERY_REPORT_SLACK_S
        )

        def on_delivery(err: KafkaError | None, _: Message) -> None:
            # librdkafka's thread: record, and hand over to the loop what it must act on.
            delivery.error = err
            delivery.done = True
            if err is not None:
                log.warning("append failed topic=%s code=%s error=%s", topic, err.name(), err.str())
                if err.code() != KafkaError._MSG_TIMED_OUT:
                    failure = KafkaUnavailable(err.str(), kafka_code=err.name())
                    _call_soon(loop, _fail, reply, failure)
            if delivery.waiter is not None:
                _call_soon(loop, _settle, delivery.waiter, None)

        try:
            self._producer.produce(
                topic,
                key=event.client_id.encode(),
                value=dump(event),
                on_delivery=on_delivery,
                headers={READS_HEADER: b"1"} if isinstance(event, READS) else None,
            )
        except BufferError as exc:
            raise KafkaUnavailable("producer queue is full", kafka_code="_QUEUE_FULL") from exc
        except KafkaException as exc:
            error = exc.args[0]
            raise KafkaUnavailable(error.str(), kafka_code=error.name()) from exc
        return delivery

    def _resolve_replies(self, replies: list[Reply]) -> None:
        """Runs on the loop thread."""
        for reply in replies:
            future = self._waiting.get(reply.correlation_id)
            if future is None or future.done():
                continue  # a reply for a caller that gave up, or for another instance
            future.set_result(reply)
            self.metrics.observe_reply(reply)

    # --- threads -----------------------------------------------------------------------

    def _poll_producer(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(IDLE_WAIT_S)
            self._outage.look(self._why_no_broker)

    def _why_no_broker(self) -> str | None:
        """None if a broker answers the producer; else why not (``api.outage``). Asked
        in short rounds: a broker killed a moment ago can still accept a connection for
        some ms (measured here: ~50), and none listening is the quick answer."""
        give_up = time.monotonic() + OUTAGE_LOOK_TIMEOUT_S
        while True:
            if not any_broker_listens(self.settings.bootstrap_servers, OUTAGE_LOOK_TIMEOUT_S):
                return "no bootstrap broker accepts a connection"
            try:
                self._producer.list_topics(self.topics.requests, timeout=OUTAGE_ASK_S)
                return None
            except KafkaException as exc:
                if time.monotonic() >= give_up:
                    return exc.args[0].str()

    def _replies_end(self) -> int | None:
        """Where the instance's reply partition ends now; None if stopped first."""
        partition = TopicPartition(self.topics.replies, self.settings.api_instance)
        asker = WatermarkAsker(reply_consumer_config(self.settings))
        try:
            while not self._stopping.is_set():
                try:
                    return asker.ask(partition, REPLIES_END_QUERY_S)[1]
                except KafkaException as exc:
                    log.warning("replies not reachable yet error=%s", exc.args[0].str())
                    self._stopping.wait(0.5)
            return None
        finally:
            asker.close()

    def _consume_replies(self) -> None:
        start = self._replies_end()
        if start is None:
            return
        partition = TopicPartition(self.topics.replies, self.settings.api_instance)
        # Built once the partition has answered: a client that asked during a leader's
        # kill may keep waiting for the old leader (core.watermarks).
        consumer = self._reply_consumer_at(partition, start)
        self._replies_positioned.set()
        quiet_since, behind = time.monotonic(), False
        try:
            while not self._stopping.is_set():
                messages = take_batch(consumer, 500, IDLE_WAIT_S)
                if messages:
                    quiet_since, behind = time.monotonic(), False
                    self._take_replies(messages)
                    continue
                if time.monotonic() - quiet_since < REPLY_STALL_S:
                    continue
                quiet_since = time.monotonic()
                position = _behind_at(consumer, partition, start)
                if position is not None and behind:
                    log.warning(
                        "reply consumer read nothing while committed replies lie past its "
                        "position; rebuilt there partition=%d offset=%d",
                        partition.partition,
                        position,
                    )
                    consumer.close()
                    consumer = self._reply_consumer_at(partition, position)
                    start, position = position, None
                behind = position is not None
        finally:
            consumer.close()

    def _reply_consumer_at(self, partition: TopicPartition, offset: int) -> Consumer:
        consumer = Consumer(reply_consumer_config(self.settings))
        consumer.assign([TopicPartition(partition.topic, partition.partition, offset)])
        log.info(
            "replies assigned topic=%s partition=%d offset=%d",
            partition.topic,
            partition.partition,
            offset,
        )
        return consumer

    def _take_replies(self, messages: list[Message]) -> None:
        batch: list[Reply] = []
        for message in messages:
            if (error := message.error()) is not None:
                log.warning("reply consumer error=%s", error.str())
                continue
            try:
                batch.append(Reply.model_validate_json(message.value() or b""))
            except ValidationError as exc:
                log.error(
                    "malformed reply offset=%d error=%s",
                    message.offset(),
                    exc.errors()[0]["msg"],
                )
        if batch and self._loop is not None:
            _call_soon(self._loop, self._resolve_replies, batch)

    # --- readiness -----------------------------------------------------------------------

    def readiness(self) -> Readiness:
        """Blocking: Kafka reachable, and the ledger consumer group keeping up.

        A consumer, not an AdminClient, does the probing: librdkafka's coordinator
        admin calls (ListConsumerGroupOffsets) can abort the whole process after a
        broker connection drops (librdkafka #4605, #3663), and a probe must never be
        able to kill the instance it probes.
        """
        checks: dict[str, Any] = {"replies_positioned": self.replies_positioned}
        if self._outage.down:  # known already: answered at once, not after a probe's timeout
            checks["kafka"] = "unreachable: no broker answers this process (api.outage)"
            return Readiness(False, checks)
        with self._probe_lock:  # one probe at a time, whatever polls /readyz
            probe = self._probe_consumer()
            try:
                metadata = probe.list_topics(timeout=KAFKA_PROBE_TIMEOUT_S)
            except KafkaException as exc:
                self._drop_probe()
                checks["kafka"] = f"unreachable: {exc.args[0].str()}"
                return Readiness(False, checks)
            checks["kafka"] = "ok"
            inputs = self.topics.ledger_inputs
            missing = [t for t in [*inputs, self.topics.replies] if t not in metadata.topics]
            if missing:
                checks["topics_missing"] = missing
                return Readiness(False, checks)
            partitions = [
                TopicPartition(topic, p)
                for topic in inputs
                for p in metadata.topics[topic].partitions
            ]
            try:
                lag = _lag(probe, partitions)
            except KafkaException as exc:
                self._drop_probe()
                checks["ledger_lag"] = f"unknown: {exc.args[0].str()}"
                return Readiness(False, checks)
        checks["ledger_lag"] = lag
        return Readiness(self.replies_positioned and lag < READY_MAX_LAG, checks)

    def _probe_consumer(self) -> Consumer:
        if self._probe is None:
            self._probe = Consumer(
                {
                    **self.settings.kafka_common(),
                    # The ledger's group, to read its committed offsets. Never
                    # subscribed, so it never joins the group and never commits.
                    "group.id": f"{self.settings.region}.ledger",
                    "enable.auto.commit": False,
                    # Last committed offsets, without waiting for the processor's
                    # transaction in flight to settle.
                    "isolation.level": "read_uncommitted",
                }
            )
        return self._probe

    def _drop_probe(self) -> None:
        """On stop, and after a failed probe: the next one is a fresh client's, as a
        client that failed during a leader's kill may keep failing (core.watermarks)."""
        if self._probe is not None:
            self._probe.close()
            self._probe = None


def _behind_at(consumer: Consumer, partition: TopicPartition, start: int) -> int | None:
    """The consumer's position if committed replies lie past it, else None (also when
    the broker cannot say now). A ``read_committed`` consumer's end offset is the last
    stable one: replies of a transaction still open are not past it. Before its first
    fetch the consumer has no position: it stands where it was assigned, ``start``."""
    try:
        _, committed_end = consumer.get_watermark_offsets(
            partition, KAFKA_PROBE_TIMEOUT_S, cached=False
        )
        [at] = consumer.position([partition])
    except KafkaException:
        return None
    position = at.offset if at.offset >= 0 else start
    return position if committed_end > position else None


def _lag(probe: Consumer, partitions: list[TopicPartition]) -> int:
    """Messages the ledger group has not committed yet, over ``partitions``."""
    committed = probe.committed(partitions, timeout=KAFKA_PROBE_TIMEOUT_S)
    lag = 0
    for tp in committed:
        low, high = probe.get_watermark_offsets(
            TopicPartition(tp.topic, tp.partition), timeout=KAFKA_PROBE_TIMEOUT_S
        )
        # No commit yet: the group would start at the earliest offset still kept.
        position = tp.offset if tp.offset >= 0 else low
        lag += max(0, high - position)
    return lag


def _seconds_until(deadline_ms: int) -> float:
    return max(0.0, (deadline_ms - now_ms()) / 1000)


class _Delivery:
    """One append's delivery report, as librdkafka's thread records it.

    The loop reads it without a lock: under the GIL, the thread sets ``done`` before it
    looks at ``waiter``, and the loop sets ``waiter`` before it looks at ``done`` again,
    so at least one of them sees the other and the loop is never left waiting.
    """

    __slots__ = ("done", "error", "report_by", "waiter")

    def __init__(self, report_by: float) -> None:
        self.done = False
        self.error: KafkaError | None = None
        self.report_by = report_by  # time.monotonic(): librdkafka's message timeout, plus slack
        self.waiter: asyncio.Future[None] | None = None

    async def reported(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for the report: the caller is never told anything before librdkafka has
        given up on the event, so it cannot be appended after a 503 or 504."""
        if self.done:
            return
        self.waiter = loop.create_future()
        if self.done:
            return
        try:
            await asyncio.wait_for(self.waiter, timeout=max(0.0, self.report_by - time.monotonic()))
        except TimeoutError as exc:
            raise KafkaUnavailable(
                "no delivery report by the deadline", kafka_code="_MSG_TIMED_OUT"
            ) from exc


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():  # the waiter may have timed out and cancelled it
        future.set_result(value)


def _fail(future: asyncio.Future[Any], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    # A closed loop means the process is shutting down and nobody waits any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)
