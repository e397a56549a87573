"""Two API processes on one port, with the region's processor and generators.

Scenario: a second ``maas api`` starts on the port the first one serves, with its own
``MAAS_API_INSTANCE``. A client makes 40 ``/memes`` calls, each on a new connection.
We expect: every call gets its meme (200), and both processes served some. Which one
served a call is read from the log, not from the API: the ``MemeRequested`` event names
the reply partition of the instance that appended it (``reply_to``).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from core.heartbeat import BEAT_INTERVAL_S, STACKS_WAIT_S
from core.topic_reader import read_topic
from core.topics import Topics
from maas.supervisor import Child, supervise
from schemas.events import MemeRequested, parse_input
from tests.stack import Stack, value_of

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
    events = (parse_input(value_of(message)) for message in read_topic(stack.settings, topic))
    return {
        event.request_id: event.reply_to
        for event in events
        if isinstance(event, MemeRequested) and event.client_id == client_id
    }


def test_a_restarting_api_process_takes_no_connection_before_it_is_ready(stack: Stack) -> None:
    """Scenario: API instance 1 restarts (a rolling deploy, or the supervisor after a
    crash) while clients keep opening connections to the shared port.

    We expect: it listens only once its key table is loaded and its reply consumer is
    positioned, so every answer it gives is from a ready process: no client is sent to
    it just to be told 503 ``not_ready``.
    """
    if "api-1" not in stack.procs:
        stack.start("api", "1")
        stack.wait_ready()
    stack.terminate("api-1")
    stack.start("api", "1")
    answers: list[dict[str, object]] = []
    fresh = httpx.Limits(max_keepalive_connections=0)
    give_up = time.monotonic() + 60
    with httpx.Client(base_url=stack.base_url, timeout=10.0, limits=fresh) as http:
        while len(answers) < 20 and time.monotonic() < give_up:
            body = http.get("/readyz").json()
            if body["api_instance"] == 1:
                answers.append(body["checks"])
    assert answers, "the restarted instance never answered"
    not_ready = [a for a in answers if not (a["key_table_loaded"] and a["replies_positioned"])]
    assert not_ready == [], not_ready[:3]


def test_each_process_of_the_service_is_a_scheduling_group_of_its_own(stack: Stack) -> None:
    """Scenario: the region's processes as ``maas up`` starts them.

    We expect: each is the leader of its own session, so the kernel's autogroup (a group
    per session) shares a saturated machine's CPU between processes rather than threads
    (docs/architecture.md, "Decision: each process a scheduling group of its own").
    """
    sessions = {label: os.getsid(proc.pid) for label, proc in stack.procs.items()}
    assert sessions == {label: proc.pid for label, proc in stack.procs.items()}


WATCHDOG_S = 2.0


def test_a_stopped_api_process_is_killed_by_its_supervisor_and_the_port_serves_again(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Scenario: API instance 1 runs under a supervisor's watch, as ``maas up`` runs it
    (its heartbeat file, a 2 s limit here), and is stopped with SIGSTOP: a wedged process.
    Clients keep opening connections to the shared port.

    We expect: the kernel keeps handing the stopped process its share of the new
    connections, so the supervisor kills it once its heartbeat has been silent for the
    limit (up to a second less, as it last beat before the stop; a little more, as its
    stacks are asked for first) and starts it again; then every call on a new
    connection is answered, as many as reached instance 1 as before.
    """
    if "api-1" in stack.procs:  # a plain process of an earlier test: unwatched
        stack.terminate("api-1")
    child = Child(
        "api",
        stack.log_dir / "api-1.log",
        "127.0.0.1",
        stack.port,
        instance_id="1",
        heartbeat=tmp_path / "api-1",
        watchdog_s=WATCHDOG_S,
    )
    child.start(stack.env)
    assert child.process is not None
    stack.procs["api-1"] = first = child.process
    stack.api_instances.add(1)
    stack.wait_ready()

    stop = threading.Event()

    def supervisor() -> None:
        while not stop.is_set():
            supervise(child, stack.env, time.monotonic())
            stop.wait(0.1)

    caplog.set_level(logging.ERROR, logger="maas.up")
    watching = threading.Thread(target=supervisor, daemon=True)
    watching.start()
    try:
        stopped_at = time.monotonic()
        first.send_signal(signal.SIGSTOP)
        # The supervisor's thread reaps it (``poll``), which sets its return code.
        give_up = stopped_at + WATCHDOG_S + 10
        while first.returncode is None and time.monotonic() < give_up:
            time.sleep(0.05)
        killed_after_s = time.monotonic() - stopped_at
        while child.process is first and time.monotonic() < give_up:
            time.sleep(0.05)
    finally:
        stop.set()
        watching.join(timeout=5)
    assert first.returncode == -signal.SIGKILL
    # Silent since its last beat, up to a beat's interval before the stop.
    slack_s = STACKS_WAIT_S + 1.0  # its stacks asked for first; a busy machine
    assert WATCHDOG_S - BEAT_INTERVAL_S <= killed_after_s <= WATCHDOG_S + slack_s, killed_after_s
    assert "process unresponsive process=api-1" in caplog.text
    stack.procs["api-1"] = child.process
    stack.wait_ready()  # the restarted instance answers too

    fresh = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=stack.base_url, timeout=5.0, limits=fresh) as http:
        instances = Counter(http.get("/readyz").json()["api_instance"] for _ in range(CALLS))
    assert set(instances) == {0, 1}, instances


def test_a_stopping_api_process_answers_calls_on_its_connections_and_closes_them(
    stack: Stack,
) -> None:
    """Scenario: API instance 1 gets SIGTERM (a rolling restart's predecessor, or ``maas
    up`` stopping) while a client holds two idle keep-alive connections to it. Half a
    second later the client sends a call on the first; it leaves the second idle.

    We expect: the call is answered, by instance 1, with ``Connection: close`` (the
    client's next call goes on a new connection, to a process still listening); the idle
    one is closed once the drain (``api_drain_s``) is over, and the process exits then,
    with 0.
    Closed at once, as a plain uvicorn does, the first call would have had no answer.
    """
    if "api-1" not in stack.procs or stack.procs["api-1"].poll() is not None:
        stack.start("api", "1")
        stack.wait_ready()
    used, idle = _connection_to(stack, instance=1), _connection_to(stack, instance=1)
    try:
        api = stack.procs["api-1"]
        stopped_at = time.monotonic()
        api.terminate()
        time.sleep(0.5)

        used.request("GET", "/readyz")
        answer = used.getresponse()
        assert answer.status == 200
        assert json.loads(answer.read())["api_instance"] == 1
        assert answer.getheader("connection") == "close"

        assert api.wait(timeout=stack.settings.api_drain_s + 15) == 0  # a clean stop
        drained_s = time.monotonic() - stopped_at
        assert drained_s >= stack.settings.api_drain_s - 0.5, drained_s  # `idle` held it
        assert idle.sock is not None and idle.sock.recv(1) == b""  # closed by the server
    finally:
        used.close()
        idle.close()
    with httpx.Client(base_url=stack.base_url, timeout=5.0) as client:
        assert client.get("/readyz").json()["api_instance"] == 0  # the others still serve


def _connection_to(stack: Stack, instance: int) -> http.client.HTTPConnection:
    """A keep-alive connection that the kernel gave to API instance ``instance``."""
    for _ in range(100):
        connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
        connection.request("GET", "/readyz")
        if json.loads(connection.getresponse().read())["api_instance"] == instance:
            return connection
        connection.close()
    raise AssertionError(f"no connection reached API instance {instance} in 100")
