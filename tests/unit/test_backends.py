"""Memes AI backends and the caption policy fallback (the pool: ``test_generator_pool``).

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
from typing import Any

import pytest
from pydantic import ValidationError

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
from tests.unit.fixed_backend import FixedBackend

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
