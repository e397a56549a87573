"""Usage analytics on a real region: the faust worker ``maas usage``.

Scenario: a region serves meme requests from two clients, one of them with too few
tokens, so that the ledger rejects some. The usage worker starts only after the first
requests and reads the requests topic from its beginning. Then it is killed with SIGKILL
while more requests arrive, and started again.

We expect:
- the worker counts every request the API appended, rejected ones too, per client and
  UTC hour; the region's view adds them up and names the busiest client first;
- after the kill and the restart, its table is restored from its changelog and it reads
  on: no request goes uncounted, and at most those counted before the kill are counted
  twice (counting is at least once, and says so);
- an unknown client counts zero; a malformed client id gets a 422 naming the field;
- the ledger is untouched: the balances are what the charges and rejections make them.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from maas.broker import free_port
from processors.usage.counts import hour_of
from tests.stack import Stack

pytestmark = pytest.mark.kafka

READY_TIMEOUT_S = 120.0


def send(stack: Stack, api_key: str, n: int) -> list[int]:
    return [stack.meme(api_key, query=f"usage {i}").status_code for i in range(n)]


def usage(stack: Stack, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{stack.env['MAAS_USAGE_PORT']}{path}", timeout=10)


def wait_for(stack: Stack, client_id: str, at_least: int) -> dict[str, Any]:
    """Poll the client's usage until it reaches ``at_least`` requests."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    last: Any = None
    while time.monotonic() < deadline:
        if stack.procs["usage"].poll() is not None:
            raise AssertionError(f"usage worker exited:\n{stack.tail('usage')}")
        try:
            response = usage(stack, f"/usage/{client_id}/")
            last = response.json() if response.status_code == 200 else response.text
            if response.status_code == 200 and last["requests"] >= at_least:
                return last
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise AssertionError(f"usage of {client_id} below {at_least}: {last}\n{stack.tail('usage')}")


def test_usage_counts_every_request_and_survives_kill(stack: Stack) -> None:
    started_ms = int(time.time() * 1000)
    busy, busy_key = stack.new_client(tokens=100)
    poor, poor_key = stack.new_client(tokens=2)
    first = send(stack, busy_key, 12) + send(stack, poor_key, 5)
    assert first.count(200) == 14 and first.count(402) == 3, first

    stack.env["MAAS_USAGE_PORT"] = str(free_port())
    stack.start("usage")
    assert wait_for(stack, busy, 12)["requests"] == 12
    poor_usage = wait_for(stack, poor, 5)
    assert poor_usage["requests"] == 5  # rejected requests are demand too

    hours = {hour_of(started_ms), hour_of(int(time.time() * 1000))}
    assert set(poor_usage["hours"]) <= hours, poor_usage
    region = usage(stack, "/usage/").json()
    assert region["region"] == stack.settings.region
    assert region["partitions"] == list(range(stack.settings.partitions)), region  # one worker
    assert region["requests"] == 17 and region["clients"] == 2, region
    assert sum(region["hours"].values()) == 17, region
    assert region["top_clients"][0] == {"client_id": busy, "requests": 12}, region

    print(f"[usage] counted before the kill at {time.monotonic():.1f}", flush=True)
    stack.kill("usage")
    assert send(stack, busy_key, 8) == [200] * 8
    stack.start("usage")
    after = wait_for(stack, busy, 20)
    print(f"[usage] counted after the restart at {time.monotonic():.1f}", flush=True)
    assert 20 <= after["requests"] <= 20 + 12, after  # only pre-kill events may recount

    unknown = usage(stack, "/usage/no-such-client/")
    assert unknown.status_code == 200 and unknown.json()["requests"] == 0, unknown.text
    malformed = usage(stack, "/usage/not%20an%20id/")
    assert malformed.status_code == 422 and malformed.json()["field"] == "client_id"

    assert stack.balance(busy_key) == 100 - 20
    assert stack.balance(poor_key) == 0
