"""A Memes AI backend that answers one caption, after a delay, for the pool and policy tests."""

from __future__ import annotations

import time

from processors.generators.backends import AiCaption, CaptionRequest


class FixedBackend:
    name = "fixed"

    def __init__(self, caption: AiCaption, delay_s: float = 0.0) -> None:
        self.caption = caption
        self.delay_s = delay_s
        self.calls = 0

    def write_caption(self, request: CaptionRequest, timeout_s: float) -> AiCaption:
        # Ignores the timeout on purpose: the AI pool's own deadline must hold regardless.
        self.calls += 1
        time.sleep(self.delay_s)
        return self.caption
