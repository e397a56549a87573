"""The Jepsen checker against a real region: a short recorded history passes, a forged
answer in it fails.

The history is recorded as the fault scenario records it (``tests.jepsen.history``), one
line per HTTP exchange; the checker then reads the region's topics from the broker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.jepsen.checker import check, main
from tests.jepsen.history import History, read_history, wall_ms
from tests.stack import FAULT_QUERY, Stack

pytestmark = pytest.mark.kafka


class Recorder:
    """Sends one request per call and records it as one history line."""

    def __init__(self, stack: Stack, history: History) -> None:
        self.stack = stack
        self.history = history
        self.attempts: dict[str, int] = {}

    def send(
        self,
        op: str,
        logical: str,
        method: str,
        path: str,
        *,
        client_id: str | None = None,
        api_key: str | None = None,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any] | None:
        headers = self.stack.auth(api_key) if api_key else dict(self.stack.billing)
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        self.attempts[logical] = self.attempts.get(logical, 0) + 1
        invoke_ms = wall_ms()
        status: int | None = None
        error: str | None = None
        response: dict[str, Any] | None = None
        try:
            answer = self.stack.http.request(
                method, path, params=params, json=body, headers=headers
            )
            status, response = answer.status_code, answer.json()
        except httpx.HTTPError as exc:
            error = repr(exc)
        self.history.record(
            {
                "worker": 0,
                "op": op,
                "logical": logical,
                "attempt": self.attempts[logical],
                "client_id": client_id,
                "invoke_ms": invoke_ms,
                "complete_ms": wall_ms(),
                "method": method,
                "path": path,
                "params": params or {},
                "idempotency_key": idempotency_key,
                "body": body,
                "status": status,
                "error": error,
                "response": response,
            }
        )
        return response

    def meme(
        self, client_id: str, api_key: str, logical: str, key: str | None = None
    ) -> dict[str, Any] | None:
        params = {"lat": 40.73061, "lon": -73.935242, "query": f"jepsen {logical}"}
        return self.send(
            "meme", logical, "GET", "/memes", client_id=client_id, api_key=api_key,
            params=params, idempotency_key=key,
        )  # fmt: skip


def record_a_short_run(stack: Stack, path: Path) -> None:
    with History(path) as history:
        rec = Recorder(stack, history)
        registered = rec.send("register", "reg-1", "POST", "/v1/clients", body={"name": "j"})
        assert registered is not None
        client_id, api_key = registered["client_id"], registered["api_key"]
        rec.send(
            "purchase", "buy-1", "POST", f"/v1/clients/{client_id}/purchases",
            client_id=client_id, body={"purchase_id": "order-1", "tokens": 3},
        )  # fmt: skip
        first = rec.meme(client_id, api_key, "m-1", key="key-1")
        assert first is not None and "meme_id" in first, first
        rec.meme(client_id, api_key, "m-1", key="key-1")  # a retry: the same meme, no charge
        rec.meme(client_id, api_key, "m-2")
        rec.meme(client_id, api_key, f"m-3-{FAULT_QUERY}", key="key-3")  # 502, refunded
        rec.meme(client_id, api_key, "m-4")  # the last token
        rec.meme(client_id, api_key, "m-5")  # 402, keyless: found by its query
        rec.send(
            "lookup", "look-1", "GET", f"/v1/requests/{first['request_id']}",
            client_id=client_id, api_key=api_key,
        )  # fmt: skip
        rec.send("me", "me-1", "GET", "/v1/me", client_id=client_id, api_key=api_key)


def test_a_recorded_run_passes_and_a_forged_answer_fails(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "history.jsonl"
    record_a_short_run(stack, path)
    told = [line["status"] for line in read_history(path) if line["op"] == "meme"]
    assert told == [200, 200, 200, 502, 200, 402], told

    bootstrap, region = stack.env["KAFKA_BOOTSTRAP_SERVERS"], stack.settings.region
    verdict = check(path, bootstrap, region)
    print(verdict.report())  # shown with -s, and on failure
    assert verdict.ok, verdict.report()
    assert verdict.stats["told_200"] == 4 and verdict.stats["outcome_delivered"] == 3
    assert verdict.stats["outcome_refunded"] == 1 and verdict.stats["outcome_rejected"] == 1

    forged = tmp_path / "forged.jsonl"
    lines = read_history(path)
    first_200 = next(line for line in lines if line["op"] == "meme" and line["status"] == 200)
    first_200["response"]["meme_id"] = "not-the-meme-the-ledger-delivered"
    forged.write_text("".join(json.dumps(line) + "\n" for line in lines))
    # The command line, as the scenario runs it: exit status 1 and the problem named.
    argv = ["--history", str(forged), "--bootstrap", bootstrap, "--region", region]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "[told]" in out and "not-the-meme-the-ledger-delivered" in out, out
