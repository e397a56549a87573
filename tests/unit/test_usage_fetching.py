"""The usage worker's consumer fetches in batches (``processors/usage/fetching.py``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.settings import Settings
from processors.usage.app import build_app
from processors.usage.fetching import (
    FETCH_MAX_WAIT_MS,
    FETCH_MIN_BYTES,
    ConsumerThread,
    Transport,
)


def test_the_worker_consumer_that_faust_builds_waits_for_a_batch(tmp_path: Path) -> None:
    async def built() -> tuple[int, int]:
        app = build_app(Settings(data_dir=str(tmp_path)))
        assert isinstance(app.transport, Transport)
        thread = app.consumer._thread  # type: ignore[attr-defined]  # what the worker starts
        assert isinstance(thread, ConsumerThread)
        consumer = thread._create_worker_consumer(app.transport)  # no broker needed to build
        try:
            # aiokafka's own defaults are 1 byte and 500 ms; faust's, 1 byte and 1,500 ms.
            return consumer._fetch_min_bytes, consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()
            thread.thread_loop.close()

    assert asyncio.run(built()) == (FETCH_MIN_BYTES, FETCH_MAX_WAIT_MS)
    assert FETCH_MIN_BYTES > 1
