"""A generator pool's loop, run for real on in-process fakes of its consumer and producer.

What it must keep: at most ``concurrency`` renders at once; a slow job holds back no
other (each outcome is produced as its meme is made); the AI pool's own deadline turns a
slow model into one refundable ``MemeFailed``; a waiter is told only after its outcome
is acknowledged; an offset is stored only once every job before it is done; a delivery
that fails stops the pool without storing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_NOT_AVAILABLE,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from hypothesis import given
from hypothesis import strategies as st

from core.blobstore import LocalBlobStore
from core.settings import Settings
from core.topics import ANSWERED_HEADER, CLIENT_PARTITION_HEADER
from memes.render import render_meme
from processors.generators.backends import AiBackendUnavailable, AiCaption, CaptionRequest
from processors.generators.in_order import InOrder
from processors.generators.worker import GeneratorPool
from processors.generators.worker import log as worker_log
from schemas.events import Kind, MemeApproved, MemeFailed, MemeGenerated, Reply
from tests.unit.fixed_backend import FixedBackend

PARIS = (48.8534, 2.3488)
WAITER: dict[str, Any] = {"reply_to": 3, "correlation_id": "ev-1", "tokens": 1, "balance_after": 7}

Delivery = Callable[[KafkaError | None, None], None]


class FakeMessage:
    """A consumed record; its timestamp (when the ledger produced it) is now unless given."""

    def __init__(
        self,
        value: bytes,
        partition: int = 0,
        offset: int = 0,
        age_ms: int | None = 0,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self._value, self._partition, self._offset = value, partition, offset
        self._headers = headers
        self._timestamp = (
            (TIMESTAMP_NOT_AVAILABLE, -1)
            if age_ms is None
            else (TIMESTAMP_CREATE_TIME, time.time_ns() // 1_000_000 - age_ms)
        )

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class FakeConsumer:
    """Hands out its messages in order, then nothing; records the offsets stored."""

    def __init__(self, messages: list[FakeMessage]) -> None:
        self.queue = list(messages)
        self.stored: list[tuple[int, int]] = []
        self.closed = False

    def subscribe(self, topics: list[str], on_revoke: Any = None) -> None:
        pass

    def poll(self, timeout: float) -> FakeMessage | None:
        if self.queue:
            return self.queue.pop(0)
        time.sleep(timeout)
        return None

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        self.stored.extend((tp.partition, tp.offset) for tp in offsets)

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Acknowledges what was produced when polled, as librdkafka does, or fails it."""

    def __init__(self, error: KafkaError | None = None) -> None:
        self.error = error
        self.produced: list[tuple[str, bytes, int]] = []
        self.headers: list[dict[str, bytes] | None] = []  # of each record produced
        self.unacked: list[Delivery] = []
        self.lock = threading.Lock()

    def produce(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        partition: int,
        on_delivery: Delivery,
        headers: dict[str, bytes] | None = None,
    ) -> None:
        with self.lock:
            self.produced.append((topic, value, partition))
            self.headers.append(headers)
            self.unacked.append(on_delivery)

    def poll(self, timeout: float) -> int:
        with self.lock:
            due, self.unacked = self.unacked, []
        for on_delivery in due:
            on_delivery(self.error, None)
        if not due:
            time.sleep(min(timeout, 0.005))
        return len(due)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return 0


def _approved(
    request_id: str,
    query: str = "pizza",
    *,
    deadline_after_ms: int = 60_000,
    kind: Kind = "ai",
    **waiter: Any,
) -> bytes:
    """An approval; ``waiter`` (reply_to, correlation_id, tokens, balance_after) as a
    processor from v2 on names it, none as an older one."""
    now_ms = time.time_ns() // 1_000_000
    job = MemeApproved(
        **waiter,
        event_id=f"e-{request_id}",
        client_id="c1",
        region="local",
        occurred_at_ms=now_ms,
        causation_id=request_id,
        request_id=request_id,
        lat=PARIS[0],
        lon=PARIS[1],
        query=query,
        kind=kind,
        deadline_ms=now_ms + deadline_after_ms,
    )
    return job.model_dump_json().encode()


def _pool(
    tmp_path: Path,
    backend: Any,
    messages: list[FakeMessage],
    deadline_ms: int = 300,
    producer: FakeProducer | None = None,
) -> GeneratorPool:
    settings = Settings(
        ai_generator_deadline_ms=deadline_ms,
        request_deadline_ms=max(deadline_ms * 2, 5_000),
        ai_concurrency=2,
    )
    return GeneratorPool(
        settings,
        "ai",
        consumer=FakeConsumer(messages),  # type: ignore[arg-type]
        producer=producer or FakeProducer(),  # type: ignore[arg-type]
        backend=backend,
        blobs=LocalBlobStore(tmp_path, fsync=False),
    )


def _run(pool: GeneratorPool, until: Callable[[], bool], timeout_s: float = 10.0) -> float:
    """Run the pool's loop until ``until()`` holds, then stop it; the seconds it took.
    Whatever the loop raised is in ``pool.raised``."""
    raised: list[Exception] = []

    def loop() -> None:
        try:
            pool.run()
        except Exception as exc:
            raised.append(exc)

    thread = threading.Thread(target=loop)
    started = time.monotonic()
    thread.start()
    while not until() and thread.is_alive() and time.monotonic() - started < timeout_s:
        time.sleep(0.01)
    took_s = time.monotonic() - started
    pool.stop_event.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    pool.raised = raised  # type: ignore[attr-defined]
    return took_s


def _stored(pool: GeneratorPool) -> list[tuple[int, int]]:
    return pool.consumer.stored  # type: ignore[attr-defined]


def _produced(pool: GeneratorPool) -> list[tuple[str, bytes, int]]:
    return pool.producer.produced  # type: ignore[attr-defined]


def _outcomes(pool: GeneratorPool) -> list[MemeGenerated | MemeFailed]:
    out: list[MemeGenerated | MemeFailed] = []
    for topic, value, _ in _produced(pool):
        if topic != pool.topics.outcomes:
            continue
        data = json.loads(value)
        model = MemeGenerated if "image_key" in data else MemeFailed
        out.append(model.model_validate(data))
    return out


def test_ai_pool_turns_a_slow_backend_into_a_refundable_failure(tmp_path: Path) -> None:
    """Scenario: the model answers after the AI pool's deadline.
    We expect: MemeFailed for the request (the ledger refunds it and answers the waiter,
    so it is not marked answered), within the deadline, no second outcome when the model
    answers later, and the offset stored."""
    message = FakeMessage(_approved("req-slow", **WAITER), offset=7)
    pool = _pool(tmp_path, FixedBackend(AiCaption("late", "caption"), delay_s=1.0), [message])
    # The outcome, in time; the offset is stored on the main thread's next wake-up.
    assert _run(pool, lambda: bool(_outcomes(pool))) < 0.9
    assert pool.producer.headers == [None]  # type: ignore[attr-defined]
    (outcome,) = _outcomes(pool)
    assert isinstance(outcome, MemeFailed)
    assert outcome.request_id == "req-slow"
    assert "deadline" in outcome.error
    assert _stored(pool) == [(0, 8)]


def test_ai_pool_fails_work_that_waited_past_its_bound_and_makes_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Scenario: after an overload the AI topic holds approvals of seconds ago, then fresh
    ones; all are still within the request deadline.
    We expect: the stale ones are failed (refunded) without asking the model, each with a
    warning that says why, the fresh ones made, every offset stored; a record without a
    timestamp is made too."""
    caplog.set_level(logging.WARNING, logger=worker_log.name)
    backend = FixedBackend(AiCaption("fresh", "meme"))
    messages = [
        FakeMessage(_approved("req-stale-0"), offset=0, age_ms=2_500),
        FakeMessage(_approved("req-stale-1"), offset=1, age_ms=1_600),
        FakeMessage(_approved("req-fresh"), offset=2, age_ms=20),
        FakeMessage(_approved("req-untimed"), offset=3, age_ms=None),
    ]
    pool = _pool(tmp_path, backend, messages, deadline_ms=3_000)
    pool.started_at_ms -= 60_000  # running for a minute: the backlog is its own
    assert pool.max_wait_ms == 1_500
    _run(pool, lambda: (0, 4) in _stored(pool))
    by_request = {outcome.request_id: outcome for outcome in _outcomes(pool)}
    assert set(by_request) == {"req-stale-0", "req-stale-1", "req-fresh", "req-untimed"}
    for stale in ("req-stale-0", "req-stale-1"):
        failed = by_request[stale]
        assert isinstance(failed, MemeFailed)
        assert "waited" in failed.error and "limit 1500" in failed.error
    assert isinstance(by_request["req-fresh"], MemeGenerated)
    assert isinstance(by_request["req-untimed"], MemeGenerated)
    assert backend.calls == 2
    failed_lines = [r.getMessage() for r in caplog.records if "meme failed" in r.getMessage()]
    assert len(failed_lines) == 2, failed_lines
    assert all("kind=ai" in line and "limit 1500" in line for line in failed_lines)


def test_ai_pool_makes_the_work_that_waited_for_its_restart(tmp_path: Path) -> None:
    """Scenario: an AI pool restarts (a deploy) while approvals arrive for its partitions;
    the new pool finds them 1.6 and 2.5 s old, within the request deadline.
    We expect: both made, not failed: they waited for the restart, not behind the pool's
    own backlog."""
    backend = FixedBackend(AiCaption("fresh", "meme"))
    messages = [
        FakeMessage(_approved("req-during-0"), offset=0, age_ms=2_500),
        FakeMessage(_approved("req-during-1"), offset=1, age_ms=1_600),
    ]
    pool = _pool(tmp_path, backend, messages, deadline_ms=3_000)
    _run(pool, lambda: (0, 2) in _stored(pool))
    assert all(isinstance(outcome, MemeGenerated) for outcome in _outcomes(pool))
    assert backend.calls == 2


def test_the_standard_pool_has_no_wait_bound(tmp_path: Path) -> None:
    old = _approved("req-old", kind="standard")
    pool = GeneratorPool(
        Settings(),
        "standard",
        consumer=FakeConsumer([FakeMessage(old, age_ms=4_000)]),  # type: ignore[arg-type]
        producer=FakeProducer(),  # type: ignore[arg-type]
        blobs=LocalBlobStore(tmp_path, fsync=False),
    )
    assert pool.max_wait_ms == 0
    _run(pool, lambda: bool(_stored(pool)))
    (outcome,) = _outcomes(pool)
    assert isinstance(outcome, MemeGenerated)


def test_ai_pool_turns_a_backend_error_into_a_refundable_failure(tmp_path: Path) -> None:
    class Down:
        name = "down"

        def write_caption(self, request: CaptionRequest, timeout_s: float) -> AiCaption:
            raise AiBackendUnavailable("HTTP 503: overloaded")

    pool = _pool(tmp_path, Down(), [FakeMessage(_approved("req-down"))])
    _run(pool, lambda: bool(_stored(pool)))
    (outcome,) = _outcomes(pool)
    assert isinstance(outcome, MemeFailed)
    assert "AiBackendUnavailable" in outcome.error


def test_ai_pool_delivers_and_falls_back(tmp_path: Path) -> None:
    backend = FixedBackend(AiCaption("such pizza", "very paris"))
    pool = _pool(tmp_path, backend, [FakeMessage(_approved("req-ok"))], deadline_ms=5_000)
    _run(pool, lambda: bool(_stored(pool)))
    backend.caption = AiCaption("fuck this shit", "asshole")
    pool2 = _pool(tmp_path, backend, [FakeMessage(_approved("req-bad"))], deadline_ms=5_000)
    _run(pool2, lambda: bool(_stored(pool2)))
    (ok,), (bad,) = _outcomes(pool), _outcomes(pool2)
    assert isinstance(ok, MemeGenerated) and ok.kind == "ai"
    assert ok.caption == "SUCH PIZZA / VERY PARIS"
    assert isinstance(bad, MemeGenerated) and bad.kind == "standard"
    assert bad.caption == render_meme("req-bad", "pizza", *PARIS, "standard").caption
    assert LocalBlobStore(tmp_path).get(ok.image_key)


def test_ai_pool_runs_at_most_its_concurrency_at_once(tmp_path: Path) -> None:
    in_flight, peak, lock = [0], [0], threading.Lock()

    class Counting:
        name = "counting"

        def write_caption(self, request: CaptionRequest, timeout_s: float) -> AiCaption:
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            time.sleep(0.05)
            with lock:
                in_flight[0] -= 1
            return AiCaption("a", "b")

    messages = [FakeMessage(_approved(f"req-{i}"), offset=i) for i in range(6)]
    pool = _pool(tmp_path, Counting(), messages, deadline_ms=5_000)
    assert pool.concurrency == 2
    _run(pool, lambda: (0, 6) in _stored(pool))
    assert peak[0] == 2
    assert len(_outcomes(pool)) == 6
    assert all(isinstance(o, MemeGenerated) for o in _outcomes(pool))


def test_a_slow_job_holds_back_no_other_but_its_offset_holds(tmp_path: Path) -> None:
    """Scenario: the first job's model is slow; the jobs after it are quick.
    We expect: the quick jobs' outcomes are produced while the slow one still renders,
    but no offset is stored past the slow job until it is done, then past all."""
    release = threading.Event()

    class FirstIsSlow:
        name = "first-is-slow"

        def write_caption(self, request: CaptionRequest, timeout_s: float) -> AiCaption:
            if request.request_id == "req-0":
                release.wait(5)
            return AiCaption("a", "b")

    messages = [FakeMessage(_approved(f"req-{i}"), offset=10 + i) for i in range(4)]
    pool = _pool(tmp_path, FirstIsSlow(), messages, deadline_ms=5_000)
    thread = threading.Thread(target=pool.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(_outcomes(pool)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(o.request_id for o in _outcomes(pool)) == ["req-1", "req-2", "req-3"]
        time.sleep(0.1)  # deliveries are served every few ms: none may store yet
        assert _stored(pool) == []
        release.set()
        while (0, 14) not in _stored(pool) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _stored(pool)[-1] == (0, 14)
    finally:
        release.set()
        pool.stop_event.set()
        thread.join(timeout=10)


def test_a_meme_made_in_time_is_told_to_its_waiter_after_its_outcome(tmp_path: Path) -> None:
    """Scenario: an approval that names its waiting API; the meme is made in time.
    We expect: the MemeGenerated names the waiter it answered and is marked answered (the
    ledger may settle it later), and the answer ("made", with the meme and what the charge
    left) goes to the waiter's reply partition after the outcome is acknowledged; the
    offset is stored once the answer is acknowledged."""
    messages = [FakeMessage(_approved("req-told", **WAITER))]
    pool = _pool(tmp_path, FixedBackend(AiCaption("such", "wow")), messages, deadline_ms=5_000)
    _run(pool, lambda: bool(_stored(pool)))
    produced = _produced(pool)
    assert [(t, p) for t, _, p in produced] == [(pool.topics.outcomes, 0), (pool.topics.replies, 3)]
    assert pool.producer.headers[0] == {ANSWERED_HEADER: b"1"}  # type: ignore[attr-defined]
    (made,) = _outcomes(pool)
    assert isinstance(made, MemeGenerated) and made.replied_to == "ev-1"
    reply = Reply.model_validate_json(produced[1][1])
    assert (reply.correlation_id, reply.outcome, reply.made) == ("ev-1", "made", made)
    assert (reply.balance, reply.tokens_charged, reply.caption) == (7, 1, None)


@pytest.mark.parametrize(
    ("headers", "outcome_partition"),
    [([(CLIENT_PARTITION_HEADER, b"1")], 1), (None, 4)],
    ids=["naming its client's partition", "from an older processor, on its client's partition"],
)
def test_an_outcome_goes_to_its_clients_partition_whatever_the_approvals(
    tmp_path: Path, headers: list[tuple[str, bytes]] | None, outcome_partition: int
) -> None:
    """Scenario: an approval read from partition 4 of its pool's topic (spread there by
    its request id) whose header names partition 1 for its client; or one without the
    header, which a processor from before the spreading wrote on its client's partition.
    We expect: the outcome on the client's partition of the outcomes topic, where the
    ledger processor that owns the client reads it; the offset stored for partition 4."""
    message = FakeMessage(_approved("req-spread"), partition=4, offset=9, headers=headers)
    pool = _pool(tmp_path, FixedBackend(AiCaption("such", "wow")), [message], deadline_ms=5_000)
    _run(pool, lambda: bool(_stored(pool)))
    assert [(t, p) for t, _, p in _produced(pool)] == [(pool.topics.outcomes, outcome_partition)]
    assert _stored(pool) == [(4, 10)]


@pytest.mark.parametrize(
    ("waiter", "deadline_after_ms"),
    [({}, 60_000), (WAITER, 150)],
    ids=["an older processor's approval", "made after the deadline"],
)
def test_the_ledger_answers_when_the_generator_may_not(
    tmp_path: Path, waiter: dict[str, Any], deadline_after_ms: int
) -> None:
    backend = FixedBackend(AiCaption("such", "wow"), delay_s=0.3)
    messages = [FakeMessage(_approved("req-quiet", deadline_after_ms=deadline_after_ms, **waiter))]
    pool = _pool(tmp_path, backend, messages, deadline_ms=5_000)
    _run(pool, lambda: bool(_stored(pool)))
    assert [t for t, _, _ in _produced(pool)] == [pool.topics.outcomes]
    assert pool.producer.headers == [None]  # type: ignore[attr-defined]  # settled at once
    (made,) = _outcomes(pool)
    assert isinstance(made, MemeGenerated) and made.replied_to is None


@pytest.mark.parametrize(
    "message",
    [
        FakeMessage(b'{"type": "MemeApproved"}', offset=3),
        FakeMessage(_approved("req-x"), offset=3, headers=[(CLIENT_PARTITION_HEADER, b"x")]),
    ],
    ids=["not an approval", "its client's partition not a number"],
)
def test_an_invalid_approval_is_skipped_and_its_offset_stored(
    tmp_path: Path, message: FakeMessage
) -> None:
    messages = [message]
    pool = _pool(tmp_path, FixedBackend(AiCaption("a", "b")), messages, deadline_ms=5_000)
    _run(pool, lambda: bool(_stored(pool)))
    assert _stored(pool) == [(0, 4)]
    assert _produced(pool) == []


def test_a_failed_delivery_stops_the_pool_without_storing(tmp_path: Path) -> None:
    """Scenario: the broker never acknowledges the outcome (librdkafka gave up on it).
    We expect: the pool stops with the error, so that its restart makes the meme again,
    and stores no offset past it."""
    producer = FakeProducer(KafkaError(KafkaError._MSG_TIMED_OUT))
    messages = [FakeMessage(_approved("req-lost"))]
    pool = _pool(tmp_path, FixedBackend(AiCaption("a", "b")), messages, 5_000, producer)
    _run(pool, lambda: False, timeout_s=5)
    (raised,) = pool.raised  # type: ignore[attr-defined]
    assert isinstance(raised, KafkaException)
    assert _stored(pool) == []
    assert pool.consumer.closed  # type: ignore[attr-defined]


@given(st.permutations(range(12)))
def test_in_order_never_passes_a_job_that_is_not_done(order: list[int]) -> None:
    """Jobs at offsets 0..11 finish in any order: each stored offset is one past an
    unbroken run of finished jobs from the first, and the last is 12."""
    offsets = InOrder()
    for offset in range(12):
        offsets.started(1, offset)
    finished: set[int] = set()
    stored: list[int] = []
    for offset in order:
        finished.add(offset)
        to_store = offsets.done(1, offset)
        if to_store is not None:
            assert set(range(to_store)) <= finished  # passes no job that is not done
            assert to_store == 12 or to_store not in finished  # and stops at the first
            stored.append(to_store)
    assert stored == sorted(stored) and stored[-1] == 12


def test_in_order_starts_afresh_when_the_consumer_goes_back() -> None:
    """A partition given up and taken again restarts from its last commit: the jobs open
    before are redone, so a late one of them moves nothing on its own."""
    offsets = InOrder()
    for offset in (5, 6, 7):
        offsets.started(2, offset)
    offsets.started(2, 5)  # taken again from the commit at 5
    assert offsets.done(2, 7) is None  # an old job, not started again yet
    assert offsets.done(2, 5) == 6
