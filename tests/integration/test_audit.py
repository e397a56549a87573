"""Auditing a real region: ``maas audit`` over the ledger topic and over tampered copies,
signed checkpoints, and the auditor routes of the API.

Scenario: two clients buy tokens and memes (one generator failure, so one refund).
We expect: the topic and an untouched dump verify; a copy with an edited amount, a
deleted line or two swapped lines does not, and the finding names the client and seq;
a checkpoint makes a cut at the end of the log visible; the auditor routes answer with
the same entries and balances the clients see.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from core.topic_reader import position_of, read_topic
from core.topics import Topics
from tests.stack import FAULT_QUERY, Stack, value_of

pytestmark = pytest.mark.kafka

CLI_TIMEOUT_S = 120


def audit(stack: Stack, *args: str) -> tuple[int, list[dict[str, str]], str]:
    """Run ``maas audit ...``; returns the exit code, the findings and stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "maas.cli", "audit", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert "Traceback" not in done.stderr, done.stderr
    findings = []
    for line in done.stdout.splitlines():
        if line.startswith("finding "):
            head = line.removeprefix("finding ").split(' detail="')[0]
            findings.append(dict(field.split("=", 1) for field in head.split()))
    return done.returncode, findings, done.stdout


def has(findings: list[dict[str, str]], kind: str, client_id: str, seq: int) -> bool:
    return any(
        f["kind"] == kind and f.get("client_id") == client_id and f.get("seq") == str(seq)
        for f in findings
    )


@pytest.fixture(scope="module")
def traffic(stack: Stack) -> dict[str, Any]:
    """Two clients with purchases, memes, a replaced key and a refund; returns their ids
    and keys. Every meme is settled in the ledger when it returns (a delivery is recorded
    just after the 200), so that the ledger does not grow under the tests."""
    alice, alice_key = stack.new_client(tokens=5)
    bob, bob_key = stack.new_client(tokens=2)
    for n in range(3):
        settled_meme(stack, alice_key, f"audit {n}")
    rotated = stack.http.post(f"/v1/clients/{alice}/api-key", headers=stack.billing)
    assert rotated.status_code == 201, rotated.text
    alice_key = rotated.json()["api_key"]
    assert stack.meme(alice_key, query=FAULT_QUERY).status_code == 502  # refunded
    settled_meme(stack, bob_key, "audit bob")
    stack.purchase(bob, 4)
    return {"alice": alice, "alice_key": alice_key, "bob": bob, "bob_key": bob_key}


def settled_meme(stack: Stack, api_key: str, query: str) -> None:
    response = stack.meme(api_key, query=query)
    assert response.status_code == 200, response.text
    assert stack.settled(api_key, response.json()["request_id"])["status"] == "delivered"


def dump(stack: Stack, path: Path) -> list[dict[str, Any]]:
    code, _, out = audit(stack, "dump", "--file", str(path))
    assert code == 0, out
    return [json.loads(line) for line in path.read_text().splitlines()]


def write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def positions(lines: list[dict[str, Any]], client_id: str) -> list[int]:
    """Line numbers (0-based) of a client's entries, in seq order."""
    return [i for i, line in enumerate(lines) if line["entry"]["client_id"] == client_id]


# --- maas audit ------------------------------------------------------------------------


def test_the_topic_and_an_untouched_dump_verify(
    stack: Stack, traffic: dict[str, Any], tmp_path: Path
) -> None:
    code, findings, out = audit(stack, "verify")
    assert (code, findings) == (0, []), out
    assert "result=ok" in out

    lines = dump(stack, tmp_path / "ledger.jsonl")
    alice = positions(lines, traffic["alice"])
    assert [lines[i]["entry"]["seq"] for i in alice] == list(range(1, len(alice) + 1))
    code, findings, out = audit(stack, "verify", "--file", str(tmp_path / "ledger.jsonl"))
    assert (code, findings) == (0, []), out


def test_an_edited_amount_is_reported_with_client_and_seq(
    stack: Stack, traffic: dict[str, Any], tmp_path: Path
) -> None:
    lines = dump(stack, tmp_path / "ledger.jsonl")
    alice = traffic["alice"]
    i = next(i for i in positions(lines, alice) if lines[i]["entry"]["type"] == "TokensCharged")
    seq = lines[i]["entry"]["seq"]
    lines[i]["entry"]["tokens"] = 2

    code, findings, out = audit(stack, "verify", "--file", str(write(tmp_path / "t.jsonl", lines)))

    assert code == 1, out
    assert has(findings, "balance", alice, seq), out
    assert has(findings, "altered", alice, seq), out  # the next entry's prev_hash
    assert "result=FAILED" in out


def test_a_forged_key_change_is_reported(
    stack: Stack, traffic: dict[str, Any], tmp_path: Path
) -> None:
    """Whoever could write the ledger could let their own key in: the entry's hash, in
    the next entry's prev_hash, gives the edit away."""
    lines = dump(stack, tmp_path / "ledger.jsonl")
    alice = traffic["alice"]
    i = next(i for i in positions(lines, alice) if lines[i]["entry"]["type"] == "ApiKeyRotated")
    seq = lines[i]["entry"]["seq"]
    lines[i]["entry"]["api_key_sha256"] = "ee" * 32

    code, findings, out = audit(stack, "verify", "--file", str(write(tmp_path / "t.jsonl", lines)))

    assert code == 1, out
    assert has(findings, "altered", alice, seq), out


def test_a_deleted_line_is_a_gap(stack: Stack, traffic: dict[str, Any], tmp_path: Path) -> None:
    lines = dump(stack, tmp_path / "ledger.jsonl")
    alice = traffic["alice"]
    i = positions(lines, alice)[2]
    seq = lines.pop(i)["entry"]["seq"]

    code, findings, out = audit(stack, "verify", "--file", str(write(tmp_path / "t.jsonl", lines)))

    assert code == 1, out
    assert has(findings, "gap", alice, seq), out


def test_two_swapped_lines_are_reordered(
    stack: Stack, traffic: dict[str, Any], tmp_path: Path
) -> None:
    lines = dump(stack, tmp_path / "ledger.jsonl")
    bob = traffic["bob"]
    i, j = positions(lines, bob)[1:3]
    lines[i], lines[j] = lines[j], lines[i]

    code, findings, out = audit(stack, "verify", "--file", str(write(tmp_path / "t.jsonl", lines)))

    assert code == 1, out
    assert has(findings, "reordered", bob, lines[i]["entry"]["seq"]), out


def test_a_checkpoint_makes_a_cut_at_the_end_visible(
    stack: Stack, traffic: dict[str, Any], tmp_path: Path
) -> None:
    code, _, out = audit(stack, "checkpoint")
    assert code == 0, out
    signed = [line for line in out.splitlines() if line.startswith("audit checkpoint ")]
    assert len(signed) == stack.settings.partitions, out

    code, findings, out = audit(stack, "verify")
    assert (code, findings) == (0, []), out
    assert f"checkpoints={stack.settings.partitions}" in out

    lines = dump(stack, tmp_path / "ledger.jsonl")
    code, findings, out = audit(stack, "verify", "--file", str(tmp_path / "ledger.jsonl"))
    assert (code, findings) == (0, []), out

    # Drop bob's last entry: his chain is still valid, only the checkpoint shows the cut
    # (bob's entry is the last of its partition: nothing was written after his purchase
    # in that partition unless alice shares it; cut every later line of the partition).
    last = positions(lines, traffic["bob"])[-1]
    partition = lines[last]["partition"]
    cut = [
        line
        for line in lines
        if line["partition"] != partition or line["offset"] < lines[last]["offset"]
    ]
    code, findings, out = audit(
        stack, "verify", "--file", str(write(tmp_path / "cut.jsonl", cut)), "--no-checkpoints"
    )
    assert (code, findings) == (0, []), out
    code, findings, out = audit(stack, "verify", "--file", str(tmp_path / "cut.jsonl"))
    assert code == 1, out
    assert [(f["kind"], f["partition"]) for f in findings] == [("truncated", str(partition))]


# --- auditor routes ----------------------------------------------------------------------


def test_a_clients_ledger_as_json_filtered_and_paginated(
    stack: Stack, traffic: dict[str, Any]
) -> None:
    alice = traffic["alice"]
    url = f"/v1/clients/{alice}/ledger"
    response = stack.http.get(url, headers=stack.auditor)
    assert response.status_code == 200, response.text
    page = response.json()
    entries = page["entries"]
    assert page["next_cursor"] is None
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert entries[-1]["balance_after"] == stack.balance(traffic["alice_key"])
    types = [e["type"] for e in entries]
    assert types.count("TokensCharged") == 4 and types.count("TokensRefunded") == 1

    charged = stack.http.get(url, params={"type": "TokensCharged"}, headers=stack.auditor)
    assert [e["type"] for e in charged.json()["entries"]] == ["TokensCharged"] * 4

    later = stack.http.get(url, params={"from": "2999-01-01T00:00:00Z"}, headers=stack.auditor)
    assert later.json()["entries"] == []
    earlier = stack.http.get(url, params={"to": "2000-01-01T00:00:00Z"}, headers=stack.auditor)
    assert earlier.json()["entries"] == []
    window = {"from": "2026-01-02T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
    assert stack.http.get(url, params=window, headers=stack.auditor).json()["entries"] == []
    backwards = stack.http.get(
        url, params={**window, "to": "2026-01-01T23:59:59.999Z"}, headers=stack.auditor
    )
    assert backwards.status_code == 422, backwards.text
    assert backwards.json()["fields"] == [
        {"field": "to", "message": "must not be earlier than `from`"}
    ]

    seen, cursor = [], 0
    while True:
        response = stack.http.get(url, params={"limit": 2, "cursor": cursor}, headers=stack.auditor)
        page = response.json()
        assert len(page["entries"]) <= 2
        seen += [e["seq"] for e in page["entries"]]
        if page["next_cursor"] is None:
            break
        assert response.headers["X-Next-Cursor"] == str(page["next_cursor"])
        cursor = page["next_cursor"]
    assert seen == [e["seq"] for e in entries]


def test_a_clients_ledger_as_csv(stack: Stack, traffic: dict[str, Any]) -> None:
    response = stack.http.get(
        f"/v1/clients/{traffic['bob']}/ledger", params={"format": "csv"}, headers=stack.auditor
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["type"] for r in rows][:2] == ["AccountOpened", "TokensCredited"]
    assert int(rows[-1]["balance_after"]) == stack.balance(traffic["bob_key"])
    assert all(rows[n + 1]["prev_hash"] == rows[n]["hash"] for n in range(len(rows) - 1))


def test_the_routes_answer_without_waiting_out_a_poll(
    stack: Stack, traffic: dict[str, Any]
) -> None:
    """Each read of a topic once waited out a one-second consume timeout (every page
    took over 1 s, the reconciliation over 3 s); on a small log both answer in a
    fraction of that. The fastest of three calls, so that one slow moment does not fail it."""
    routes = ((f"/v1/clients/{traffic['alice']}/ledger", 0.5), ("/v1/audit/reconciliation", 1.0))
    for path, bound_s in routes:
        took = []
        for _ in range(3):
            started = time.monotonic()
            response = stack.http.get(path, headers=stack.auditor)
            took.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
        assert min(took) < bound_s, (path, took)


def test_auditor_and_billing_tokens_do_not_open_each_others_routes(
    stack: Stack, traffic: dict[str, Any]
) -> None:
    alice = traffic["alice"]
    for path in (f"/v1/clients/{alice}/ledger", "/v1/audit/reconciliation"):
        assert stack.http.get(path, headers=stack.billing).status_code == 401
        assert stack.http.get(path).status_code == 401
    response = stack.http.post(
        f"/v1/clients/{alice}/purchases",
        json={"purchase_id": "auditor-try", "tokens": 1},
        headers=stack.auditor,
    )
    assert response.status_code == 401
    assert stack.http.get("/v1/clients/nobody/ledger", headers=stack.auditor).status_code == 404


def test_reconciliation_matches_the_balances_clients_see(
    stack: Stack, traffic: dict[str, Any]
) -> None:
    response = stack.http.get("/v1/audit/reconciliation", headers=stack.auditor)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True, body
    rows = {row["client_id"]: row for row in body["clients"]}
    for name in ("alice", "bob"):
        row = rows[traffic[name]]
        assert row["balance"] == stack.balance(traffic[f"{name}_key"])
        assert row["holds"] and row["ok"]
        assert row["purchases_received"] == row["purchases_credited"]
        assert row["purchases_not_credited"] == row["credits_without_purchase"] == []
        assert row["requests_open"] == row["requests_without_outcome"] == []
        assert row["requests_with_several_outcomes"] == []
    assert (rows[traffic["alice"]]["charged"], rows[traffic["alice"]]["refunded"]) == (4, 1)
    total = body["total"]
    assert total["holds"]
    assert total["balance"] == sum(row["balance"] for row in body["clients"])
    assert total["credited"] - total["charged"] + total["refunded"] == total["balance"]


# --- periodic checkpoints ----------------------------------------------------------------


def checkpoints(stack: Stack) -> list[dict[str, Any]]:
    topic = Topics(stack.settings.region).ledger_checkpoints
    return [json.loads(value_of(msg)) for msg in read_topic(stack.settings, topic)]


def ledger_ends(stack: Stack) -> dict[int, int]:
    """Offset of the last entry of each partition of the ledger topic."""
    ends: dict[int, int] = {}
    for msg in read_topic(stack.settings, Topics(stack.settings.region).ledger):
        _, partition, offset = position_of(msg)
        ends[partition] = max(ends.get(partition, -1), offset)
    return ends


def wait_for_checkpoints(stack: Stack, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + CLI_TIMEOUT_S
    while time.monotonic() < deadline:
        assert stack.procs["checkpointer"].poll() is None, stack.tail("checkpointer")
        signed = checkpoints(stack)
        if len(signed) >= count:
            return signed
        time.sleep(0.5)
    raise AssertionError(f"fewer than {count} checkpoints:\n{stack.tail('checkpointer')}")


def test_the_checkpointer_signs_what_grew_until_stopped(
    stack: Stack, traffic: dict[str, Any]
) -> None:
    """Scenario: ``maas audit checkpoint --loop`` (what ``maas up`` runs) signs every
    second; after its first round, alice buys a meme; then it gets SIGTERM.

    We expect: its first round signs every partition at the ledger's end; rounds with
    nothing new sign nothing; after the meme only alice's partition is signed again, at
    its new end; SIGTERM stops it cleanly; ``maas audit verify`` passes over every
    checkpoint ever signed. Over all its rounds it read each entry once: a round reads
    only what the ledger gained (the ledger is kept forever).
    """
    partitions = stack.settings.partitions
    before = len(checkpoints(stack))
    stack.env["MAAS_AUDIT_CHECKPOINT_INTERVAL_S"] = "1"
    stack.start("checkpointer")
    first = wait_for_checkpoints(stack, before + partitions)[before:]
    ends = ledger_ends(stack)
    assert {c["partition"]: c["offset"] for c in first} == {
        p: ends.get(p, -1) for p in range(partitions)
    }
    time.sleep(3)  # three more rounds, and nothing new to sign
    assert len(checkpoints(stack)) == before + partitions

    settled_meme(stack, traffic["alice_key"], "audit periodic")
    alice_partition = next(
        position_of(msg)[1]
        for msg in read_topic(stack.settings, Topics(stack.settings.region).ledger)
        if msg.key() == traffic["alice"].encode()
    )
    end = ledger_ends(stack)[alice_partition]
    deadline = time.monotonic() + CLI_TIMEOUT_S
    while True:
        later = wait_for_checkpoints(stack, before + partitions + 1)[before + partitions :]
        if later[-1]["offset"] == end or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {c["partition"] for c in later} == {alice_partition}, later
    assert later[-1]["offset"] == end, (later, end)

    stack.terminate("checkpointer")
    assert stack.procs["checkpointer"].returncode == 0, stack.tail("checkpointer")
    said = (stack.log_dir / "checkpointer.log").read_text()
    reads = [int(n) for n in re.findall(r"audit round entries_read=(\d+)", said)]
    entries = sum(1 for _ in read_topic(stack.settings, Topics(stack.settings.region).ledger))
    assert len(reads) >= 3 and sum(reads) == entries, (reads, entries)
    code, findings, out = audit(stack, "verify")
    assert (code, findings) == (0, []), out
    assert f"checkpoints={before + partitions + len(later)}" in out
