"""The ledger processor: the only writer of balances, exactly once, with Kafka transactions.

One consumer group (``<region>.ledger``) reads the co-partitioned inputs
(``requests``, ``purchases``, ``outcomes``); the range assignor gives partition *p* of
every input topic to the same instance, so all events of one client are decided in
order by one task: that is the per-client lock. The decision is the pure fold
``ledger.fold.decide``; this module only moves bytes and keeps the commit protocol.

Commit protocol, once per batch (one Kafka transaction):

1. Take a batch: wait for a first message until the next timer is due (a deadline, a
   held outcome; at least ``commit_interval_ms``, at most ``IDLE_WAIT_S``), then take
   what has arrived, and what arrives until ``min_transaction_interval_ms`` has passed
   since the previous transaction began, at most ``max_batch_size`` (``core.batching``).
   A transaction costs the broker about a dozen requests whatever it holds, so at load
   this makes them fewer and larger; after a quiet spell a lone input is not held.
   Outcomes whose clients were answered are held up to ``settle_within_ms`` and settled
   together (nobody waits for them: ``settlements``). No
   transaction is open while consuming, so a rebalance never interrupts one. Only
   messages of owned partitions, at or past the partition's position, are kept; with
   none and no deadline due, no transaction is opened.
2. ``begin_transaction``.
3. For each message: ``decide`` against the partition's state (RocksDB under an
   overlay of this batch's own writes), then produce in the transaction: ledger
   entries, approved work, replies, ``AccountOpened`` to the clients table.
4. Expire charged requests whose deadline (plus grace) has passed: refunds, same way;
   but only once the partition's outcomes that were in the log by then are decided, so
   that a meme made in time and still unread (after a restart) is delivered instead.
   Forget the records of requests ended long enough ago (``_forget_ended``; an idle
   partition with one due gets a transaction for it alone). Then
   every state key the batch wrote goes to the changelog once, with its last value
   (same partition number as the input).
5. ``send_offsets_to_transaction`` with the next offset of *every owned* partition
   (consumed in this batch or not) and ``consumer_group_metadata()``, in every
   transaction, also one of timer refunds only: the fence. A zombie from an older
   generation is refused here, and a successor waits for this transaction before it
   restores (KIP-447; "every transaction is fenced" in ``docs/architecture.md``).
6. ``commit_transaction``. Only now is the batch's overlay written to RocksDB, with
   the changelog offset it reaches, in one write batch, and the positions advance.

Failure scenarios (the pitfalls are numbered in ``docs/architecture.md``):

- *Killed before step 6 returns*: the transaction never commits (or is aborted when the
  restarted instance calls ``init_transactions`` with the same stable
  ``transactional.id``: pitfall 5). Nothing was written to RocksDB; the inputs are
  consumed again from the committed offsets and decided again, identically.
- *Killed after step 6, before RocksDB is written*: the changelog has the writes and
  RocksDB does not; ``restore`` on assignment replays the changelog from the stored
  offset (pitfall 8).
- *Commit times out (ambiguous)*: retried while retriable; never aborted (pitfall 1).
  If it cannot be resolved the process exits and the restart's ``init_transactions``
  settles it.
- *Abortable error* (``txn_requires_abort``): abort, drop the overlay, seek every
  consumed partition back to its committed offset (pitfall 3), rebuild the deadline
  heap from RocksDB, go on. *Fatal error* (fenced, unclassified): exit; the supervisor
  restarts the process (pitfall 2).
- *Rebalance*: callbacks only run inside ``consume``, between transactions, so there is
  never a transaction to finish on revoke; a partition's store is closed on revoke or
  loss and restored on assignment after the committed offsets are stable (pitfall 4).
- *Paused past the session timeout* (a zombie with stale state and timers): its next
  transaction's offsets are refused (stale generation) and it aborts; or, if it was
  paused after its offsets were accepted, its successor waits for it to commit or to be
  aborted by the broker (then the zombie's commit is fenced: exit).
- *An input this version cannot read* (a broken producer, or an event type of a newer
  writer during a rolling deploy; a newer writer's extra optional fields are ignored by
  the input models, so those inputs are decided): never skipped silently. It goes, as it was, to
  ``<region>.ledger-dead-letters`` in the same transaction that moves the offset past
  it, with headers naming where it came from and why, and an ERROR log; an operator
  replays it once the processor can read it.
- *Duplicate input* (idempotent producer around leader changes, client retries): the
  fold deduplicates by request id and purchase id in the state (pitfall 7).
- Every reader of this processor's output uses ``read_committed`` (pitfall 6).
- *The transaction coordinator moves while starting*: ``init_transactions`` times out
  with a retriable error and is repeated until it succeeds (or the process is stopped).
- *A transactional call hangs past its timeout*: librdkafka's
  ``send_offsets_to_transaction`` can block forever when the group coordinator moves
  (librdkafka #5456, #5511, open; seen here on a broker restart). A watchdog ends the
  process if any transactional call outlives its own timeout by 2 s; the restart fences
  and aborts the hung transaction, as after a kill.
- *The main loop wedges* (a deadlock, while librdkafka's threads keep the session
  alive): once it has been neither in a poll nor in a transactional call for
  ``processor_stall_limit_ms`` (5 s), the watchdog ends the process, its threads' stacks
  in its log; the restart, the same static member, takes its partitions back, and its
  ``init_transactions`` aborts the wedged transaction (``processors.watchdog``).
"""

from __future__ import annotations

import gc
import heapq
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from pydantic import ValidationError

from core.admin import check_partition_counts
from core.batching import IDLE_WAIT_S, take_batch
from core.broker_reach import LostBrokers, any_broker_listens
from core.clock import now_ms
from core.readiness import mark_ready, take_over
from core.settings import Settings
from core.topic_reader import position_of
from core.topics import Topics
from ledger.fold import Decision, Expire, Forget, decide
from ledger.state import KeyValueState, pending_key, record_writes
from processors.fatal import FATAL_EXIT_CODE, raise_if_fatal
from processors.ledger.faults import FaultPoint, Point
from processors.ledger.outputs import decision_outputs
from processors.ledger.ownership import offsets_after, owned_inputs
from processors.ledger.restore import ChangelogRestorer, is_transient
from processors.ledger.settlements import HeldOutcomes
from processors.ledger.store import Overlay, PartitionStore
from processors.watchdog import Watchdog
from schemas.events import InputEvent, parse_input

log = logging.getLogger("maas.ledger")

RETRY_BACKOFF_S = 0.1
TXN_CALL_TIMEOUT_S = 5.0
WATCHDOG_SLACK_S = 2.0  # a call may overrun its own timeout a little before it is "hung"
BROKER_LOOK_TIMEOUT_S = 1.0
BROKER_REACH_S = 2.0
STABLE_OFFSETS_TIMEOUTS = 3  # transaction timeouts to wait for a zombie's txn to settle
# The broker's smallest allowed session: a hung (stopped) instance's partitions move to
# another instance after this long. A killed one is restarted at once and, being a static
# member, takes them straight back.
SESSION_TIMEOUT_MS = 6_000
# Nothing a transaction writes is readable before its commit, and the commit sends what
# is queued at once (librdkafka's flush ignores the linger), so lingering costs no
# latency. A short linger sent a small ProduceRequest per partition every millisecond
# while a large batch was still being decided: half of the broker's CPU per decision
# (docs/performance.md, ledger processor).
PRODUCE_LINGER_MS = 50
# Ended requests are forgotten (ledger.fold) as a partition's inputs move on: at most
# FORGET_BATCH records per transaction, once a second of input time, or at once while
# more are due. The fold already treats them as gone by the asking input's time; the
# margin keeps a record for an input stamped up to an hour behind the partition's
# latest (another API's clock), so that dropping it never changes a decision.
FORGET_EVERY_MS = 1_000
FORGET_MARGIN_MS = 3_600_000
FORGET_BATCH = 1_000


class TransactionAborted(Exception):
    """The open transaction had to be aborted; the batch will be consumed again."""


def group_id(region: str) -> str:
    return f"{region}.ledger"


class LedgerProcessor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.region)
        self.stop_event = threading.Event()
        self.stores: dict[int, PartitionStore] = {}
        self.deadlines: list[tuple[int, int, str, str]] = []  # (deadline, partition, client, req)
        # What the heap holds: a retry rewrites its request's pending key, and must not
        # add a second timer for it.
        self.scheduled: set[tuple[int, str, str]] = set()
        # The timers of requests the open transaction charged: they join the heap once it
        # commits (an abort rebuilds the heap from the stores).
        self.charged: list[tuple[int, int, str, str]] = []
        # Per partition, the outcomes offset to decide before its due deadlines fire
        # (_expirable); an offset of an earlier assignment is simply passed already.
        self.expiry_barriers: dict[int, int] = {}
        self.overlay = Overlay()
        # Per partition: the latest input time decided, when its next Forget is due, and
        # the deadline its ended-index is read from (what committed Forgets covered, so
        # that their deletes are not read again; the open transaction's go to the second).
        self.input_times: dict[int, int] = {}
        self.forget_due: dict[int, int] = {}
        self.forgotten_through: dict[int, int] = {}
        self.forgetting_through: dict[int, int] = {}
        self.changelog_offsets: dict[int, int] = {}
        # Next offset to decide of every assigned input partition, as of the last commit.
        # Every transaction sends all of them with the group metadata (see _process).
        self.positions: dict[tuple[str, int], int] = {}
        self.fault = FaultPoint.parse(settings.fault_point)
        self.state_dir = (
            Path(settings.data_dir) / "ledger-state" / settings.region / settings.instance_id
        )
        self.decisions = 0
        self.transactions = 0
        self.requests_forgotten = 0  # records dropped past the retention (_forget_ended)
        # When the last transaction began (time.monotonic); the next begins no sooner
        # than min_transaction_interval_ms after it (run).
        self.began_at = -math.inf
        self.held_outcomes = HeldOutcomes(
            self.topics.outcomes, settings.settle_within_ms / 1000, settings.max_batch_size
        )
        self.watchdog = Watchdog(
            poll_limit_s=settings.max_poll_interval_ms / 1000,
            stall_limit_s=settings.processor_stall_limit_ms / 1000,
        )
        common = settings.kafka_common()
        self.consumer = Consumer(
            {
                **common,
                "group.id": group_id(settings.region),
                # Static membership: a restarted instance takes its partitions back at once,
                # without waiting for the session of the killed one to time out.
                "group.instance.id": f"{settings.region}.ledger.{settings.instance_id}",
                "partition.assignment.strategy": "range",  # co-partitioning needs range
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # fetch.wait.max.ms stays at librdkafka's 500 ms: a fetch is a long poll
                # that the broker answers as soon as a record is there, so waiting costs
                # no latency, and a few ms would make the broker spin at idle.
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "max.poll.interval.ms": settings.max_poll_interval_ms,
            }
        )
        self.lost_brokers = LostBrokers(log)
        self.producer = Producer(
            {
                **common,
                "error_cb": self.lost_brokers.note,
                "transactional.id": f"{settings.region}.ledger.{settings.instance_id}",
                "transaction.timeout.ms": settings.transaction_timeout_ms,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": PRODUCE_LINGER_MS,
                # The first produce of a transaction adds partitions to it; while the
                # previous commit is still completing the broker answers "concurrent
                # transactions" and librdkafka retries after retry.backoff.ms. At the
                # 100 ms default every back-to-back transaction took ~100 ms.
                "retry.backoff.ms": 10,
            }
        )
        self.restorer = ChangelogRestorer(settings, group_id(settings.region))

    # --- main loop --------------------------------------------------------------------

    def run(self) -> None:
        init_timeout_s = self.settings.transaction_timeout_ms / 1000
        reach_a_broker(self.producer, self.topics.ledger)
        init_transactions(self.producer, init_timeout_s, self.watchdog, self.stop_event)
        # The broker answers now: before a decision is written where the settings say.
        check_partition_counts(self.consumer, self.settings)
        self.restorer.warm()
        self.consumer.subscribe(
            self.topics.ledger_inputs,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info(
            "ledger processor started instance=%s region=%s",
            self.settings.instance_id,
            self.settings.region,
        )
        spacing_s = self.settings.min_transaction_interval_ms / 1000
        try:
            while not self.stop_event.is_set():
                with self.watchdog.polling():
                    messages = take_batch(
                        self.consumer,
                        self.settings.max_batch_size,
                        self.held_outcomes.wait_s(self._until_next_deadline_s()),
                        gather_until=self.began_at + spacing_s,
                    )
                self._end_if_every_broker_is_gone()
                due = self._due_deadlines(now_ms())
                messages = self.held_outcomes.take(messages, deadlines_due=bool(due))
                idle = not messages and not due
                forgets = idle and self._forgets_due()
                if idle and not forgets:
                    continue
                try:
                    self._process(messages, due, forgets)
                except TransactionAborted as exc:
                    log.warning("transaction aborted error=%s; rewinding", exc)
                    self._abort_and_rewind(messages)
        finally:
            self.close()

    def close(self) -> None:
        self.watchdog.close()
        self.consumer.close()
        self.restorer.close()
        for store in self.stores.values():
            store.close()
        self.stores.clear()
        log.info(
            "ledger processor stopped decisions=%d transactions=%d requests_forgotten=%d",
            self.decisions,
            self.transactions,
            self.requests_forgotten,
        )

    def _process(
        self, messages: list[Message], due: list[tuple[int, int, str, str]], forgets: bool
    ) -> None:
        """One transaction: decide what this instance owns, fenced by the group metadata.

        Only messages of assigned partitions at or past their position are decided: a
        partition revoked inside ``consume`` (its store is closed) belongs to the next
        owner, which reads it from the committed offset; a message before the position
        was decided already (a partition revoked and assigned again in one batch).
        """
        consumed = []
        for msg in messages:
            error = msg.error()
            if error is None:
                consumed.append(msg)
                continue
            raise_if_fatal(error)
            log.error("consume error=%s", error)
        inputs = owned_inputs(consumed, self.positions)
        next_offsets = offsets_after(self.positions, inputs)
        expiring = self._expirable(due, next_offsets)
        if not inputs and not expiring and not forgets:
            return
        self.began_at = time.monotonic()
        self._txn("begin_transaction", self.producer.begin_transaction)
        for msg, topic, partition, offset in inputs:
            try:
                # A record without a value fails validation like any other broken input.
                event = parse_input(msg.value() or b"")
            except ValidationError as exc:
                # Not ours to fix here (a broken producer, or a newer writer's event type
                # this version cannot read), and not ours to drop: the input goes to the
                # dead-letter topic in this transaction, so it is kept, and said loudly.
                self._dead_letter(msg, topic, partition, offset, str(exc.errors()[:3]))
                continue
            self._decide(partition, event)
            if event.occurred_at_ms > self.input_times.get(partition, 0):
                self.input_times[partition] = event.occurred_at_ms
        expired_at_ms = now_ms()
        for _deadline, partition, client_id, request_id in expiring:
            expire = Expire(
                client_id=client_id,
                request_id=request_id,
                region=self.settings.region,
                now_ms=expired_at_ms,
            )
            self._decide(partition, expire)
        self._forget_ended()
        self._produce_changelog()
        refunds = bool(expiring)
        self._fault("after_produce", refunds=refunds)
        # The fence: every transaction, whatever it holds (inputs, timer refunds, replies
        # to queries), carries the offsets of every partition this instance owns with
        # the group metadata. A zombie's stale generation is refused here, before
        # anything commits; and a successor's wait for stable offsets covers every
        # partition this transaction may have written (docs/architecture.md).
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
        self._txn(
            "send_offsets_to_transaction",
            lambda: self.producer.send_offsets_to_transaction(
                offsets, self.consumer.consumer_group_metadata(), TXN_CALL_TIMEOUT_S
            ),
        )
        self._fault("after_offsets", refunds=refunds)
        self._commit()
        self.transactions += 1
        self._fault("after_commit", refunds=refunds)
        self.positions = next_offsets
        self._persist()

    def _fault(self, point: Point, *, refunds: bool) -> None:
        if self.fault is not None:
            self.fault.reached(point, refunds=refunds)

    def _decide(self, partition: int, event: InputEvent | Expire | Forget) -> Decision:
        remember_ms = self.settings.personal_data_retention_ms
        decision = decide(self._view(partition), event, remember_ms=remember_ms)
        self._apply(partition, decision)
        return decision

    def _forget_ended(self) -> None:
        """A ``Forget`` for each owned partition whose time has moved on
        (``_forget_times``). It reads the index from where the committed ones ended
        (``_apply`` moves that back for a request that ended with an earlier deadline)."""
        for partition, at_ms in self._forget_times().items():
            forgotten = self._decide(partition, self._forget(partition, at_ms)).forgotten
            self.requests_forgotten += sum(gone.record for gone in forgotten)
            if len(forgotten) == FORGET_BATCH:  # more are due: again in the next transaction
                self.forget_due[partition] = at_ms
                self.forgetting_through[partition] = forgotten[-1].deadline_ms
            else:
                self.forget_due[partition] = at_ms + FORGET_EVERY_MS
                remember_ms = self.settings.personal_data_retention_ms
                self.forgetting_through[partition] = at_ms - remember_ms + 1

    def _forget_times(self) -> dict[int, int]:
        """The time of each owned partition's due ``Forget``: its latest input's, never
        past this process's clock (an input from a clock far ahead must not make every
        record look old); or the clock itself while every input of the partition in the
        log is decided (the next one is stamped about now; a backlog after an outage
        carries older stamps); less the margin."""
        wall_ms = now_ms()
        times = {}
        for partition in self.stores:
            input_ms = self.input_times.get(partition)
            stale = input_ms is None or wall_ms - input_ms > FORGET_EVERY_MS
            if stale and self._caught_up(partition):
                input_ms = wall_ms
            if input_ms is None:
                continue
            at_ms = min(input_ms, wall_ms) - FORGET_MARGIN_MS
            if at_ms >= self.forget_due.get(partition, 0):
                times[partition] = at_ms
        return times

    def _caught_up(self, partition: int) -> bool:
        """Whether this instance has decided every input of ``partition`` the log held
        at its last fetch (the inputs are not transactional: no marker trails the end)."""
        for topic in self.topics.ledger_inputs:
            position = self.positions.get((topic, partition), -1)
            _low, end = self.consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
            if end < 0 or position < end:
                return False
        return True

    def _forgets_due(self) -> bool:
        """Between inputs: whether a partition has an ended request due to be forgotten,
        which is then worth a transaction of its own (an idle partition's records must
        not outlive the retention)."""
        remember_ms = self.settings.personal_data_retention_ms
        for partition, at_ms in self._forget_times().items():
            timer = self._forget(partition, at_ms, limit=1)
            if decide(self._view(partition), timer, remember_ms=remember_ms).forgotten:
                return True
        return False

    def _forget(self, partition: int, at_ms: int, limit: int = FORGET_BATCH) -> Forget:
        """The partition's Forget at ``at_ms``, reading its index from the cursor."""
        return Forget(now_ms=at_ms, limit=limit, since_ms=self.forgotten_through.get(partition, 0))

    def _view(self, partition: int) -> KeyValueState:
        store = self.stores[partition]
        return KeyValueState(
            lambda key: self.overlay.get(partition, store, key),
            lambda start: self.overlay.scan(partition, store, start),
        )

    def _apply(self, partition: int, decision: Decision) -> None:
        self.decisions += 1
        writes = record_writes(
            decision.account, decision.requests, decision.purchase, decision.forgotten
        )
        for key, value in writes:
            self.overlay.put(partition, key, value)
        for request in decision.requests:
            if request.status == "charged":
                timer = (request.deadline_ms, partition, request.client_id, request.request_id)
                self.charged.append(timer)
            elif request.deadline_ms < self.forgotten_through.get(partition, 0):
                # Ended long past its deadline (decided after a long outage): its index
                # entry is before the cursor, which goes back to it.
                self.forgotten_through[partition] = request.deadline_ms
        outputs = decision_outputs(
            self.topics,
            partition,
            decision,
            self.settings.partitions,
            self.settings.reply_partitions,
        )
        for topic, out_partition, key, value, headers in outputs:
            self._produce(topic, out_partition, key, value, headers=headers)

    def _produce_changelog(self) -> None:
        """Each state key the batch wrote, once, with its last value: a client with five
        requests in one batch is one account record, not five (the changelog is compacted
        and a restore keeps the last value of a key anyway).

        Only a partition's last record reports its delivery: a partition's records get
        their offsets in the order produced, so its offset is the highest, and one
        Python callback per partition is cheaper than one per record."""
        for partition, writes in self.overlay.writes.items():
            last = len(writes) - 1
            for i, (key, value) in enumerate(writes.items()):
                self._produce(
                    self.topics.ledger_changelog,
                    partition,
                    key,
                    value,
                    self._on_changelog_delivery if i == last else None,
                )

    def _dead_letter(
        self, msg: Message, topic: str, partition: int, offset: int, error: str
    ) -> None:
        log.error(
            "invalid input dead-lettered topic=%s partition=%d offset=%d dead_letters=%s error=%s",
            topic,
            partition,
            offset,
            self.topics.dead_letters,
            error,
        )
        headers: dict[str, str | bytes | None] = {
            "source_topic": topic,
            "source_partition": str(partition),
            "source_offset": str(offset),
            "error": error[:1000],
        }
        self._produce(
            self.topics.dead_letters,
            partition,
            msg.key() or b"",
            msg.value(),
            headers=headers,
        )

    def _produce(
        self,
        topic: str,
        partition: int,
        key: bytes,
        value: bytes | None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
        headers: dict[str, str | bytes | None] | None = None,
    ) -> None:
        while True:
            try:
                self.producer.produce(
                    topic,
                    value=value,
                    key=key,
                    partition=partition,
                    on_delivery=on_delivery,
                    headers=headers,
                )
                return
            except BufferError:
                self.producer.poll(0.01)  # local queue full: let deliveries drain
                self.watchdog.alive()

    def _on_changelog_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            _topic, partition, offset = position_of(msg)
            self.changelog_offsets[partition] = offset

    def _commit(self) -> None:
        """Commit; a retriable (ambiguous) failure is retried, never aborted (pitfall 1)."""
        self._txn(
            "commit_transaction", lambda: self.producer.commit_transaction(TXN_CALL_TIMEOUT_S)
        )

    def _txn(self, what: str, call: Callable[[], object]) -> None:
        """Run a transactional call, sorting its errors into the three classes."""
        give_up = time.monotonic() + self.settings.transaction_timeout_ms / 1000
        while True:
            try:
                with self.watchdog.guard(
                    TXN_CALL_TIMEOUT_S + WATCHDOG_SLACK_S, what, self._broker_listens
                ):
                    call()
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.txn_requires_abort():
                    raise TransactionAborted(err) from exc
                if what == "send_offsets_to_transaction" and err.code() == KafkaError._TRANSPORT:
                    # Its coordinator's connection broke (a broker restart or kill): the
                    # retry then blocks past its timeout (librdkafka #5456, #5511), every
                    # time it was seen. End now, not when the watchdog's limit is out.
                    self.watchdog.end(f"{what} lost its coordinator error={err.str()}")
                if err.retriable() and time.monotonic() < give_up:
                    log.warning("transactional call retry error=%s", err)
                    time.sleep(RETRY_BACKOFF_S)
                    continue
                raise

    def _end_if_every_broker_is_gone(self) -> None:
        """Between transactions: a producer that lost every broker connection while none
        listens ends the process, as a call would that met it (``_broker_listens``): its
        next ``send_offsets_to_transaction`` hangs once the broker is back, until the
        watchdog (seen under ``maas up``: 7 s more), and the restart waits for the broker
        with a fresh producer instead."""
        self.producer.poll(0)  # serves its error_cb
        if not self.lost_brokers.all_down:
            return
        self.lost_brokers.all_down = False
        if not self._broker_listens():
            self.watchdog.end("the producer lost every broker connection and none listens")

    def _broker_listens(self) -> bool:
        """Whether any broker is there to answer (the watchdog's thread asks): listening,
        as a paused broker of a healthy cluster still is (``core.broker_reach``)."""
        return any_broker_listens(self.settings.bootstrap_servers, BROKER_LOOK_TIMEOUT_S)

    def _persist(self) -> None:
        """After the commit: RocksDB catches up, and new deadlines join the heap."""
        self.producer.poll(0)  # serve any delivery report not yet served
        for partition, writes in self.overlay.writes.items():
            store = self.stores.get(partition)
            if store is None:
                continue
            offset = self.changelog_offsets.get(partition, store.changelog_offset)
            store.apply(writes.items(), offset)
        for timer in self.charged:
            if timer[1] in self.stores:
                self._schedule(timer)
        self.charged.clear()
        self.forgotten_through.update(self.forgetting_through)
        self.forgetting_through.clear()
        self.overlay.clear()
        self.changelog_offsets.clear()

    def _abort_and_rewind(self, messages: list[Message]) -> None:
        self._txn("abort_transaction", lambda: self.producer.abort_transaction(TXN_CALL_TIMEOUT_S))
        self.overlay.clear()
        self.changelog_offsets.clear()
        self.charged.clear()
        self.forgetting_through.clear()
        consumed = {position_of(m)[:2] for m in messages if not m.error()}
        for topic, partition in consumed & self.positions.keys():
            # Consumer positions do not roll back with the transaction (pitfall 3).
            self.consumer.seek(TopicPartition(topic, partition, self.positions[topic, partition]))
        self._rebuild_deadlines()

    # --- deadlines --------------------------------------------------------------------

    def _due_deadlines(self, at_ms: int) -> list[tuple[int, int, str, str]]:
        """The timers past their deadline and grace whose requests are still pending.
        A request that has ended keeps its timer in the heap (removing one is a search),
        and its expiry would decide nothing: but it would take a transaction of its own,
        one per request at 100/s (docs/capacity.md)."""
        limit = at_ms - self.settings.refund_grace_ms
        due = []
        while self.deadlines and self.deadlines[0][0] < limit:
            deadline = heapq.heappop(self.deadlines)
            _deadline_ms, partition, client_id, request_id = deadline
            self.scheduled.discard(deadline[1:])
            store = self.stores.get(partition)
            if store is not None and store.get(pending_key(client_id, request_id)) is not None:
                due.append(deadline)
        return due

    def _until_next_deadline_s(self) -> float:
        """How long until the earliest timer fires (``_due_deadlines``), within
        [``commit_interval_ms``, ``IDLE_WAIT_S``]: a due deadline held back for unread
        outcomes stays at the top of the heap, and is looked at again that often."""
        until_s = IDLE_WAIT_S
        if self.deadlines:
            fires_ms = self.deadlines[0][0] + self.settings.refund_grace_ms + 1
            until_s = min(until_s, (fires_ms - now_ms()) / 1000)
        return max(self.settings.commit_interval_ms / 1000, until_s)

    def _expirable(
        self, due: list[tuple[int, int, str, str]], decided: dict[tuple[str, int], int]
    ) -> list[tuple[int, int, str, str]]:
        """The due deadlines of owned partitions whose outcomes are decided as far as the
        log held them when the deadlines came due. A meme made in time may wait unread in
        the outcomes topic (after a restart, before the first fetch of that partition, or
        behind a backlog): it must be delivered, not refunded, as its client may hold it
        already. A held deadline goes back to the heap and fires once that point is
        decided, a fixed offset, so a busy partition does not hold it for ever."""
        owned = {d[1] for d in due if d[1] in self.stores}
        unread = {p for p in owned if self._outcomes_unread(p, decided)}
        ready = []
        for deadline in due:
            if deadline[1] in unread:
                self._schedule(deadline)
            elif deadline[1] in owned:
                ready.append(deadline)
        return ready

    def _outcomes_unread(self, partition: int, decided: dict[tuple[str, int], int]) -> bool:
        """Whether outcomes of ``partition`` that were in the log when its timers came due
        (the end its last fetch reported then: the barrier) are not all decided yet. Not
        fetched since the assignment, the end is unknown: assume so."""
        barrier = self.expiry_barriers.get(partition)
        if barrier is None:
            tp = TopicPartition(self.topics.outcomes, partition)
            _low, end = self.consumer.get_watermark_offsets(tp, cached=True)
            if end < 0:
                return True
            barrier = self.expiry_barriers[partition] = end
        if decided.get((self.topics.outcomes, partition), 0) < barrier:
            return True
        del self.expiry_barriers[partition]
        return False

    def _schedule(self, deadline: tuple[int, int, str, str]) -> None:
        if deadline[1:] not in self.scheduled:
            self.scheduled.add(deadline[1:])
            heapq.heappush(self.deadlines, deadline)

    def _rebuild_deadlines(self) -> None:
        self.deadlines = [
            (deadline_ms, partition, client_id, request_id)
            for partition, store in self.stores.items()
            for client_id, request_id, deadline_ms in store.pending()
        ]
        heapq.heapify(self.deadlines)
        self.scheduled = {deadline[1:] for deadline in self.deadlines}

    # --- rebalance --------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in self._wait_stable_offsets(consumer, partitions):
            offset = tp.offset
            if offset < 0:  # nothing committed yet: consumption starts at the earliest
                offset = self.restorer.watermarks(TopicPartition(tp.topic, tp.partition))[0]
            self.positions[tp.topic, tp.partition] = offset
        numbers = sorted({tp.partition for tp in partitions})
        for partition in numbers:
            if partition not in self.stores:
                self.stores[partition] = self.restorer.restore(
                    partition, self.state_dir / str(partition)
                )
        self._rebuild_deadlines()
        log.info("partitions assigned partitions=%s", numbers)
        mark_ready(self.settings.ready_file)

    def _wait_stable_offsets(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> list[TopicPartition]:
        """The committed offsets, once stable: a zombie's open transaction must be settled
        before its changelog records can be read to the end (KIP-447).

        The broker aborts a timed-out transaction at its next periodic check, so this can
        take longer than ``transaction_timeout_ms``: a time-out is waited out again, and a
        transient error (the group coordinator's broker killed) asked again, for up to
        ``STABLE_OFFSETS_TIMEOUTS`` transaction timeouts in all, before it is fatal.
        """
        timeout_s = self.settings.transaction_timeout_ms / 1000
        give_up = time.monotonic() + STABLE_OFFSETS_TIMEOUTS * timeout_s
        attempt = 0
        while True:
            attempt += 1
            try:
                return consumer.committed(partitions, timeout=timeout_s)
            except KafkaException as exc:
                err = exc.args[0]
                timed_out = err.code() == KafkaError._TIMED_OUT
                if not (timed_out or is_transient(err)) or time.monotonic() > give_up:
                    raise
                log.warning(
                    "committed offsets not readable yet attempt=%d error=%s; waiting for "
                    "an open transaction to be settled or the coordinator to answer",
                    attempt,
                    err,
                )
                if not timed_out:
                    time.sleep(RETRY_BACKOFF_S)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in partitions})
        for tp in partitions:
            self.positions.pop((tp.topic, tp.partition), None)
        for partition in numbers:
            self.input_times.pop(partition, None)
            self.forget_due.pop(partition, None)
            self.forgotten_through.pop(partition, None)
        self.held_outcomes.drop((tp.topic, tp.partition) for tp in partitions)
        for partition in numbers:
            store = self.stores.pop(partition, None)
            if store is not None:
                store.close()
        self._rebuild_deadlines()
        log.info("partitions revoked partitions=%s", numbers)


def reach_a_broker(producer: Producer, topic: str) -> None:
    """Have a producer just made talk to a broker before ``init_transactions``. Called
    with no broker connection up yet, librdkafka's coordinator query found no broker and
    then, in 2 of 5 processor restarts seen here, waited out its 500 ms query timer
    instead of asking once the connection was up (forty-eighth session). A failed ask
    changes nothing: ``init_transactions`` waits for a broker then."""
    try:
        producer.list_topics(topic, timeout=BROKER_REACH_S)
    except KafkaException as exc:
        log.warning("no broker answered before init_transactions error=%s", exc.args[0])


def init_transactions(
    producer: Producer, timeout_s: float, watchdog: Watchdog, stop: threading.Event
) -> None:
    """Fence every earlier instance of this transactional id, repeating while retriable.

    While the id's transaction coordinator moves (its broker killed, paused or still
    loading the transaction log) the call times out and librdkafka reports the last
    cause (e.g. NOT_COORDINATOR) as retriable: the call may be repeated. Repeating it
    here costs nothing; exiting would cost a process restart and, before the supervisor
    runs, fail the whole start. Fenced or fatal errors are raised (pitfall 2).
    """
    while not stop.is_set():
        try:
            with watchdog.guard(timeout_s + WATCHDOG_SLACK_S, "init_transactions"):
                producer.init_transactions(timeout_s)
            return
        except KafkaException as exc:
            err = exc.args[0]
            if not err.retriable():
                raise
            log.warning("init_transactions retry error=%s", err)
            time.sleep(RETRY_BACKOFF_S)


def run(settings: Settings) -> None:
    processor = LedgerProcessor(settings)
    # What exists now lives as long as the process (modules, schemas, Kafka clients).
    # Frozen, a full collection no longer walks it: 8.7 ms of a decision loop's time
    # each, measured here; the API and the generator pools do the same.
    gc.freeze()
    signal.signal(signal.SIGTERM, lambda *_: processor.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: processor.stop_event.set())
    # Its transactional id and state are its predecessor's until that one has exited.
    take_over(settings.ready_file, settings.predecessor_pid)
    try:
        processor.run()
    except KafkaException as exc:
        # Fenced, or an error that is neither retriable nor abortable (pitfall 2): a
        # fresh process is the only safe continuation, and the supervisor starts one.
        log.critical("fatal kafka error, exiting error=%s", exc.args[0])
        raise SystemExit(FATAL_EXIT_CODE) from exc
