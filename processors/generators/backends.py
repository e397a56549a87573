"""Memes AI: who writes the caption of an "ai" meme.

``AiBackend`` is the interface; two implementations:

- ``OfflineAiBackend`` (the default) runs here with no network and no model. It picks
  a phrase from a small built-in bank by a hash of the request id and fills in the
  query and the place. It is a deterministic stand-in, honest about being one: no
  language model, no learning, the same request id always gets the same caption.
- ``OpenAiCompatibleBackend`` asks any server that speaks the OpenAI chat-completions
  protocol (``POST <base_url>/chat/completions``) for the two caption lines. Base URL,
  model, key and timeout come from settings (``make_backend``).

Either way the picture itself is drawn locally (``render.render_meme`` with kind "ai"):
the backend only writes words, and every caption is screened by the content policy
before it is drawn (``make_ai_meme``).

Errors, one root::

    AiBackendError                    the backend could not write a caption
    ├── AiBackendTimeout              no answer within the deadline
    ├── AiBackendUnavailable          connection refused, HTTP 4xx/5xx
    └── AiBackendBadReply             an answer we cannot read as two caption lines

The worker turns every one of them into ``MemeFailed``, which refunds the token.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from core.settings import Settings
from memes import policy
from memes.captions import offline_ai_caption
from memes.matching import choose_template, stable_hash
from memes.place import Place, locate
from memes.render import RenderedMeme, render_meme
from memes.templates import Template

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("maas.generator.ai")

MAX_CAPTION_LINE_CHARS = 120
DEFAULT_MAX_TOKENS = 120


class AiBackendError(Exception):
    """Root: the backend could not write a caption."""


class AiBackendTimeout(AiBackendError):
    pass


class AiBackendUnavailable(AiBackendError):
    pass


class AiBackendBadReply(AiBackendError):
    pass


@dataclass(frozen=True)
class CaptionRequest:
    """What a caption writer is told about the meme."""

    request_id: str
    query: str
    lat: float
    lon: float
    place: Place
    template: Template


@dataclass(frozen=True)
class AiCaption:
    top: str
    bottom: str


class AiBackend(Protocol):
    name: str

    def write_caption(self, request: CaptionRequest, timeout_s: float) -> AiCaption:
        """Two caption lines, or an ``AiBackendError`` within ``timeout_s`` seconds."""
        ...


class OfflineAiBackend:
    """The deterministic phrase-bank stand-in (see the module docstring)."""

    name = "offline"

    def write_caption(self, request: CaptionRequest, timeout_s: float) -> AiCaption:
        top, bottom = offline_ai_caption(
            request.request_id, request.query, request.lat, request.lon
        )
        return AiCaption(top, bottom)


SYSTEM_PROMPT = (
    "You write captions for image memes. Reply with a JSON object and nothing else: "
    '{"top": "...", "bottom": "..."}. Each line at most 60 characters, funny, '
    "family-friendly, no slurs, no insults, no profanity."
)


def user_prompt(request: CaptionRequest) -> str:
    return (
        f"Meme template: {request.template.name} ({request.template.description}).\n"
        f"Topic from the user: {request.query}\n"
        f"Where the user is: {request.place.label}.\n"
        "Write the top and bottom caption; mention the place if it fits the joke."
    )


class OpenAiCompatibleBackend:
    """Captions from an OpenAI-compatible ``/chat/completions`` endpoint, over httpx.

    The request asks for temperature 0 and passes a ``seed`` derived from the request
    id, so servers that honour them answer a retried request with the same caption; not
    every server does, which docs/performance.md and the worker's docstring account for.
    """

    name = "openai-compatible"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        # Imported here, by the one backend that speaks HTTP: httpx (and its command line,
        # click and rich, where those are installed) was 0.4 s of every generator pool's
        # start, on the path of a killed pool's restart.
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.max_tokens = max_tokens
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, transport=transport
        )

    def close(self) -> None:
        self._client.close()

    def write_caption(self, request: CaptionRequest, timeout_s: float) -> AiCaption:
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user_prompt(request)},
            ],
            "temperature": 0,
            "seed": stable_hash(f"seed\0{request.request_id}") % 2**31,
            "max_tokens": self.max_tokens,
        }
        import httpx  # loaded by __init__: a dictionary lookup

        try:
            response = self._client.post("/chat/completions", json=body, timeout=timeout_s)
        except httpx.TimeoutException as exc:
            raise AiBackendTimeout(f"no answer within {timeout_s:.1f}s") from exc
        except httpx.HTTPError as exc:
            raise AiBackendUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise AiBackendUnavailable(f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise AiBackendBadReply("not a chat-completions response") from exc
        return parse_caption(content)


_FENCE_RE = re.compile(r"^```(?:json)?\s*|\s*```$")


def parse_caption(content: Any) -> AiCaption:
    """Read the model's answer: the JSON object we asked for, or failing that two lines."""
    if not isinstance(content, str) or not content.strip():
        raise AiBackendBadReply("empty caption")
    text = _FENCE_RE.sub("", content.strip())
    top: Any
    bottom: Any
    try:
        parsed = json.loads(text)
        top, bottom = parsed["top"], parsed["bottom"]
    except (ValueError, KeyError, TypeError):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) != 2:
            raise AiBackendBadReply(f"expected two caption lines, got {len(lines)}") from None
        top, bottom = (re.sub(r"^(?:top|bottom)\s*:\s*", "", x, flags=re.I) for x in lines)
    if (
        not isinstance(top, str)
        or not isinstance(bottom, str)
        or not (top.strip() or bottom.strip())
    ):
        raise AiBackendBadReply("caption lines must be text")
    return AiCaption(top.strip()[:MAX_CAPTION_LINE_CHARS], bottom.strip()[:MAX_CAPTION_LINE_CHARS])


def make_backend(settings: Settings) -> AiBackend:
    """The backend named by settings (which checked that "openai" has a URL and model)."""
    if settings.ai_backend == "openai":
        return OpenAiCompatibleBackend(
            settings.ai_base_url,
            settings.ai_model,
            settings.ai_api_key.get_secret_value() or None,
            max_tokens=settings.ai_max_tokens,
        )
    return OfflineAiBackend()


@dataclass(frozen=True)
class AiOutcome:
    """An "ai" request's meme and, if the AI caption was refused, the policy's reason."""

    meme: RenderedMeme
    fallback_reason: str | None = None


def make_ai_meme(
    backend: AiBackend,
    request_id: str,
    query: str,
    lat: float,
    lon: float,
    *,
    timeout_s: float,
    caption_threshold: float | None = None,
) -> AiOutcome:
    """Ask the backend for a caption, screen it, render.

    A caption the content policy blocks is not drawn: the client gets the standard meme
    for the same query instead (kind "standard"), which is as safe as the query that
    was already screened before the charge. ``AiBackendError`` propagates: the caller
    reports a failure and the ledger refunds.
    """
    request = CaptionRequest(request_id, query, lat, lon, locate(lat, lon), choose_template(query))
    caption = backend.write_caption(request, timeout_s)
    verdict = policy.screen(f"{caption.top}\n{caption.bottom}", "caption", caption_threshold)
    if not verdict.allowed:
        log.warning(
            "ai caption blocked request_id=%s backend=%s reason=%s",
            request_id,
            backend.name,
            verdict.code,
        )
        return AiOutcome(render_meme(request_id, query, lat, lon, "standard"), verdict.reason)
    meme = render_meme(request_id, query, lat, lon, "ai", ai_caption=(caption.top, caption.bottom))
    return AiOutcome(meme)
