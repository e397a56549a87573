"""Memes AI backends, the caption policy fallback, and the AI pool's deadline.

The OpenAI-compatible backend talks to a fake chat-completions server started here on
127.0.0.1 (a real socket, a real HTTP exchange through httpx); nothing leaves the host.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from core.blobstore import LocalBlobStore
from core.settings import Settings
from memes.captions import offline_ai_caption
from memes.matching import choose_template
from memes.place import locate
from memes.render import render_meme
from processors.generators.backends import (
    AiBackendBadReply,
    AiBackendTimeout,
    AiBackendUnavailable,
    AiCaption,
    CaptionRequest,
    OfflineAiBackend,
    OpenAiCompatibleBackend,
    make_ai_meme,
    make_backend,
    parse_caption,
)
from processors.generators.worker import GeneratorPool
from schemas.events import MemeApproved, MemeFailed, MemeGenerated, Reply

PARIS = (48.8534, 2.3488)


def _request(request_id: str = "req-1", query: str = "pizza") -> CaptionRequest:
    return CaptionRequest(request_id, query, *PARIS, locate(*PARIS), choose_template(query))


# --- a fake OpenAI-compatible server -------------------------------------------------------


@dataclass
class FakeModel:
    """What the fake server answers; the test sets it, the handler reads it."""

    status: int = 200
    content: Any = '{"top": "pizza in paris", "bottom": "c\'est la vie"}'
    raw_body: bytes | None = None
    delay_s: float = 0.0
    seen: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def fake_model() -> Iterator[tuple[FakeModel, str]]:
    model = FakeModel()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            body = json.loads(self.rfile.read(length))
            model.seen.append(
                {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
            )
            time.sleep(model.delay_s)
            reply = model.raw_body
            if reply is None:
                choice = {"index": 0, "message": {"role": "assistant", "content": model.content}}
                reply = json.dumps({"object": "chat.completion", "choices": [choice]}).encode()
            try:
                self.send_response(model.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up first (the timeout test)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield model, f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_openai_backend_sends_a_chat_completion_and_reads_the_caption(
    fake_model: tuple[FakeModel, str],
) -> None:
    model, base_url = fake_model
    backend = OpenAiCompatibleBackend(base_url + "/", "tiny-model", "sk-test")
    caption = backend.write_caption(_request(), timeout_s=5)
    assert caption == AiCaption("pizza in paris", "c'est la vie")
    (seen,) = model.seen
    assert seen["path"] == "/v1/chat/completions"
    assert seen["auth"] == "Bearer sk-test"
    body = seen["body"]
    assert body["model"] == "tiny-model"
    assert body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "pizza" in body["messages"][1]["content"]
    assert "Paris, France" in body["messages"][1]["content"]
    # A retry of the same request sends the same seed.
    backend.write_caption(_request(), timeout_s=5)
    assert model.seen[1]["body"]["seed"] == body["seed"]
    backend.close()


def test_openai_backend_without_key_sends_no_authorization(
    fake_model: tuple[FakeModel, str],
) -> None:
    model, base_url = fake_model
    OpenAiCompatibleBackend(base_url, "m").write_caption(_request(), timeout_s=5)
    assert model.seen[0]["auth"] is None


def test_openai_backend_timeout(fake_model: tuple[FakeModel, str]) -> None:
    model, base_url = fake_model
    model.delay_s = 1.0
    started = time.monotonic()
    with pytest.raises(AiBackendTimeout):
        OpenAiCompatibleBackend(base_url, "m").write_caption(_request(), timeout_s=0.2)
    assert time.monotonic() - started < 0.9


@pytest.mark.parametrize("status", [400, 401, 429, 500, 503])
def test_openai_backend_http_errors(fake_model: tuple[FakeModel, str], status: int) -> None:
    model, base_url = fake_model
    model.status = status
    with pytest.raises(AiBackendUnavailable, match=f"HTTP {status}"):
        OpenAiCompatibleBackend(base_url, "m").write_caption(_request(), timeout_s=5)


def test_openai_backend_connection_refused() -> None:
    # Port 9 on loopback: nothing listens there.
    with pytest.raises(AiBackendUnavailable):
        OpenAiCompatibleBackend("http://127.0.0.1:9/v1", "m").write_caption(_request(), timeout_s=2)


@pytest.mark.parametrize("raw", [b"not json", b'{"choices": []}', b'{"choices": [{}]}'])
def test_openai_backend_bad_replies(fake_model: tuple[FakeModel, str], raw: bytes) -> None:
    model, base_url = fake_model
    model.raw_body = raw
    with pytest.raises(AiBackendBadReply):
        OpenAiCompatibleBackend(base_url, "m").write_caption(_request(), timeout_s=5)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"top": "a", "bottom": "b"}', AiCaption("a", "b")),
        ('```json\n{"top": "a", "bottom": "b"}\n```', AiCaption("a", "b")),
        ("Top: first line\nBottom: second line", AiCaption("first line", "second line")),
        ("first\n\nsecond\n", AiCaption("first", "second")),
        ('{"top": "' + "x" * 500 + '", "bottom": ""}', AiCaption("x" * 120, "")),
    ],
)
def test_parse_caption(content: str, expected: AiCaption) -> None:
    assert parse_caption(content) == expected


@pytest.mark.parametrize("content", ["", "   ", "one line only", "a\nb\nc", None, '{"top": 1}'])
def test_parse_caption_rejects(content: Any) -> None:
    with pytest.raises(AiBackendBadReply):
        parse_caption(content)


def test_offline_backend_is_the_phrase_bank() -> None:
    caption = OfflineAiBackend().write_caption(_request("req-7"), timeout_s=0.001)
    assert (caption.top, caption.bottom) == offline_ai_caption("req-7", "pizza", *PARIS)


def test_make_backend_from_settings() -> None:
    assert isinstance(make_backend(Settings()), OfflineAiBackend)
    openai = Settings(ai_backend="openai", ai_base_url="http://127.0.0.1:9/v1", ai_model="m")
    assert isinstance(make_backend(openai), OpenAiCompatibleBackend)


def test_openai_backend_settings_need_a_url_and_a_model() -> None:
    with pytest.raises(ValidationError, match="ai_base_url"):
        Settings(ai_backend="openai", ai_model="m")
    with pytest.raises(ValidationError, match="ai_backend"):
        Settings(ai_backend="magic")


# --- the caption policy ------------------------------------------------------------------


class FixedBackend:
    name = "fixed"

    def __init__(self, caption: AiCaption, delay_s: float = 0.0) -> None:
        self.caption = caption
        self.delay_s = delay_s

    def write_caption(self, request: CaptionRequest, timeout_s: float) -> AiCaption:
        time.sleep(self.delay_s)
        return self.caption


def test_allowed_ai_caption_is_drawn() -> None:
    backend = FixedBackend(AiCaption("pizza time", "in paris"))
    outcome = make_ai_meme(backend, "req-1", "pizza", *PARIS, timeout_s=1)
    assert outcome.fallback_reason is None
    assert outcome.meme.kind == "ai"
    assert outcome.meme.caption == "PIZZA TIME / IN PARIS"


def test_blocked_ai_caption_falls_back_to_the_standard_meme() -> None:
    backend = FixedBackend(AiCaption("what a stupid fucking pizza", "idiots"))
    outcome = make_ai_meme(backend, "req-1", "pizza", *PARIS, timeout_s=1)
    assert outcome.fallback_reason is not None
    assert outcome.fallback_reason.startswith("offensive_language")
    assert outcome.meme == render_meme("req-1", "pizza", *PARIS, "standard")
    assert "STUPID" not in outcome.meme.caption


def test_offline_captions_of_ordinary_queries_pass_the_caption_policy() -> None:
    for i in range(40):
        outcome = make_ai_meme(OfflineAiBackend(), f"req-{i}", "pizza party", *PARIS, timeout_s=1)
        assert outcome.fallback_reason is None, outcome.meme.caption


# --- the AI pool: bounded concurrency, its own deadline, refunds --------------------------


class FakeMessage:
    def __init__(self, value: bytes, partition: int = 0, offset: int = 0) -> None:
        self._value, self._partition, self._offset = value, partition, offset

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return self._value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class FakeProducer:
    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes, int]] = []

    def produce(self, topic: str, key: bytes, value: bytes, partition: int) -> None:
        self.produced.append((topic, value, partition))

    def flush(self, timeout: float) -> int:
        return 0


class FakeConsumer:
    def __init__(self) -> None:
        self.stored: list[FakeMessage] = []

    def store_offsets(self, message: FakeMessage) -> None:
        self.stored.append(message)


def _approved(
    request_id: str, query: str = "pizza", *, deadline_after_ms: int = 60_000, **waiter: Any
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
        kind="ai",
        deadline_ms=now_ms + deadline_after_ms,
    )
    return job.model_dump_json().encode()


def _pool(tmp_path: Path, backend: Any, deadline_ms: int = 300) -> GeneratorPool:
    settings = Settings(
        ai_generator_deadline_ms=deadline_ms,
        request_deadline_ms=max(deadline_ms * 2, 5_000),
        ai_concurrency=2,
    )
    return GeneratorPool(
        settings,
        "ai",
        consumer=FakeConsumer(),  # type: ignore[arg-type]
        producer=FakeProducer(),  # type: ignore[arg-type]
        backend=backend,
        blobs=LocalBlobStore(tmp_path, fsync=False),
    )


def _outcomes(pool: GeneratorPool) -> list[MemeGenerated | MemeFailed]:
    producer: FakeProducer = pool.producer  # type: ignore[assignment]
    out: list[MemeGenerated | MemeFailed] = []
    for topic, value, _ in producer.produced:
        if topic != pool.topics.outcomes:
            continue
        data = json.loads(value)
        model = MemeGenerated if "image_key" in data else MemeFailed
        out.append(model.model_validate(data))
    return out


def test_ai_pool_turns_a_slow_backend_into_a_refundable_failure(tmp_path: Path) -> None:
    """Scenario: the model answers after the AI pool's deadline.
    We expect: MemeFailed for the request (the ledger refunds it), within the deadline,
    and the batch's offsets stored (for the next commit)."""
    pool = _pool(tmp_path, FixedBackend(AiCaption("late", "caption"), delay_s=2.0))
    started = time.monotonic()
    message = FakeMessage(_approved("req-slow"))
    pool._handle([message])  # type: ignore[list-item]
    assert time.monotonic() - started < 1.5
    (outcome,) = _outcomes(pool)
    assert isinstance(outcome, MemeFailed)
    assert outcome.request_id == "req-slow"
    assert "deadline" in outcome.error
    assert pool.consumer.stored == [message]  # type: ignore[attr-defined]
    pool.executor.shutdown(wait=False, cancel_futures=True)


def test_ai_pool_turns_a_backend_error_into_a_refundable_failure(tmp_path: Path) -> None:
    class Down:
        name = "down"

        def write_caption(self, request: CaptionRequest, timeout_s: float) -> AiCaption:
            raise AiBackendUnavailable("HTTP 503: overloaded")

    pool = _pool(tmp_path, Down())
    pool._handle([FakeMessage(_approved("req-down"))])  # type: ignore[list-item]
    (outcome,) = _outcomes(pool)
    assert isinstance(outcome, MemeFailed)
    assert "AiBackendUnavailable" in outcome.error


def test_ai_pool_delivers_and_falls_back(tmp_path: Path) -> None:
    backend = FixedBackend(AiCaption("such pizza", "very paris"))
    pool = _pool(tmp_path, backend, deadline_ms=5_000)
    pool._handle([FakeMessage(_approved("req-ok"))])  # type: ignore[list-item]
    backend.caption = AiCaption("fuck this shit", "asshole")
    pool._handle([FakeMessage(_approved("req-bad"))])  # type: ignore[list-item]
    ok, bad = _outcomes(pool)
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

    pool = _pool(tmp_path, Counting(), deadline_ms=5_000)
    assert pool.batch_size == pool.concurrency == 2
    messages = [FakeMessage(_approved(f"req-{i}"), offset=i) for i in range(2)]
    pool._handle(messages)  # type: ignore[arg-type]
    pool._handle(messages)  # type: ignore[arg-type]
    assert peak[0] <= 2
    assert all(isinstance(o, MemeGenerated) for o in _outcomes(pool))


WAITER: dict[str, Any] = {"reply_to": 3, "correlation_id": "ev-1", "tokens": 1, "balance_after": 7}


def test_a_meme_made_in_time_is_told_to_its_waiter_after_its_outcome(tmp_path: Path) -> None:
    """Scenario: an approval that names its waiting API; the meme is made in time.
    We expect: the MemeGenerated names the waiter it answered, and the answer ("made",
    with the meme and what the charge left) goes to the waiter's reply partition after
    the outcome, so it is only sent once the outcome is acknowledged."""
    pool = _pool(tmp_path, FixedBackend(AiCaption("such", "wow")), deadline_ms=5_000)
    pool._handle([FakeMessage(_approved("req-told", **WAITER))])  # type: ignore[list-item]
    produced: FakeProducer = pool.producer  # type: ignore[assignment]
    assert [(t, p) for t, _, p in produced.produced] == [
        (pool.topics.outcomes, 0),
        (pool.topics.replies, 3),
    ]
    (made,) = _outcomes(pool)
    assert isinstance(made, MemeGenerated) and made.replied_to == "ev-1"
    reply = Reply.model_validate_json(produced.produced[1][1])
    assert (reply.correlation_id, reply.outcome, reply.made) == ("ev-1", "made", made)
    assert (reply.balance, reply.tokens_charged, reply.caption) == (7, 1, made.caption)


@pytest.mark.parametrize(
    ("waiter", "deadline_after_ms"),
    [({}, 60_000), (WAITER, 150)],
    ids=["an older processor's approval", "made after the deadline"],
)
def test_the_ledger_answers_when_the_generator_may_not(
    tmp_path: Path, waiter: dict[str, Any], deadline_after_ms: int
) -> None:
    backend = FixedBackend(AiCaption("such", "wow"), delay_s=0.3)
    pool = _pool(tmp_path, backend, deadline_ms=5_000)
    message = FakeMessage(_approved("req-quiet", deadline_after_ms=deadline_after_ms, **waiter))
    pool._handle([message])  # type: ignore[list-item]
    produced: FakeProducer = pool.producer  # type: ignore[assignment]
    assert [t for t, _, _ in produced.produced] == [pool.topics.outcomes]
    (made,) = _outcomes(pool)
    assert isinstance(made, MemeGenerated) and made.replied_to is None
