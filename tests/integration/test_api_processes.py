"""Two API processes on one port, with the region's processor and generators.

Scenario: a second ``maas api`` starts on the port the first one serves, with its own
``MAAS_API_INSTANCE``. A client makes 40 ``/memes`` calls, each on a new connection.
We expect: every call gets its meme (200), and both processes served some. Which one
served a call is read from the log, not from the API: the ``MemeRequested`` event names
the reply partition of the instance that appended it (``reply_to``).
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from core.topic_reader import read_topic
from core.topics import Topics
from schemas.events import MemeRequested, parse_input
from tests.stack import Stack

pytestmark = pytest.mark.kafka

CALLS = 40


def test_two_api_processes_share_the_port_and_each_serves_some_calls(stack: Stack) -> None:
    stack.start("api", "1")
    stack.wait_ready()  # until instance 0 and instance 1 have each answered /readyz
    client_id, api_key = stack.new_client(tokens=CALLS)

    # No keep-alive: the kernel picks a process for each new connection.
    fresh = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=stack.base_url, timeout=30.0, limits=fresh) as http:
        responses = [
            http.get(
                "/memes",
                params={"lat": 40.73, "lon": -73.93, "query": f"food {i}"},
                headers=stack.auth(api_key),
            )
            for i in range(CALLS)
        ]

    assert [r.status_code for r in responses] == [200] * CALLS, [r.text for r in responses]
    reply_to = reply_partitions(stack, client_id)
    served = Counter(reply_to[r.json()["request_id"]] for r in responses)
    assert set(served) == {0, 1}, served


def reply_partitions(stack: Stack, client_id: str) -> dict[str, int]:
    """Request id -> the reply partition its ``MemeRequested`` event names, for one client."""
    topic = Topics(stack.settings.region).requests
    events = (parse_input(message.value()) for message in read_topic(stack.settings, topic))
    return {
        event.request_id: event.reply_to
        for event in events
        if isinstance(event, MemeRequested) and event.client_id == client_id
    }
