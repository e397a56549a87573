"""``maas replay`` and ``maas export`` against a real region.

Scenario: three clients buy tokens and request memes (one generation fails and is
refunded, one client has no tokens), then a second phase adds memes and purchases.
We expect:

1. ``maas replay`` from scratch prints, for every client, the balance ``/v1/me`` shows;
2. ``--as-of-offset`` at the ledger's end offsets after phase 1, and ``--as-of-time`` at
   a time between the phases, print the phase-1 balances;
3. ``--what-if-price`` at the real prices changes nothing, and a dearer standard meme
   lowers what is charged;
4. ``maas export`` writes Parquet that DuckDB reads, with as many ledger rows as the
   replay folded and each client's last ``balance_after`` equal to its balance.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from core.topics import Topics
from tests.stack import FAULT_QUERY, Stack

pytestmark = [pytest.mark.kafka, pytest.mark.shared_region]

duckdb = pytest.importorskip("duckdb")


@dataclass
class Traffic:
    keys: dict[str, str]  # client_id -> api key
    phase1_balances: dict[str, int]
    phase1_end_offsets: dict[int, int]
    phase1_end_ms: int
    final_balances: dict[str, int]


def maas(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "maas.cli", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{args}: {result.returncode}\n{result.stderr[-3000:]}"
    return result


def table(stdout: str) -> dict[str, dict[str, str]]:
    return {row["client_id"]: row for row in csv.DictReader(io.StringIO(stdout))}


def balances(stdout: str, clients: dict[str, str]) -> dict[str, int]:
    rows = table(stdout)
    return {c: int(rows[c]["balance"]) for c in clients if c in rows}


def ledger_end_offsets(stack: Stack) -> dict[int, int]:
    topic = Topics(stack.settings.region).ledger
    consumer = Consumer({**stack.settings.kafka_common(), "group.id": "test-ends"})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in partitions
        }
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def traffic(stack: Stack) -> Traffic:
    keys: dict[str, str] = {}
    for tokens in (5, 3, 0):
        client_id, api_key = stack.new_client(tokens=tokens)
        keys[client_id] = api_key
    alice, bob, carol = keys
    for _ in range(3):
        assert stack.meme(keys[alice], query="cats").status_code == 200
    assert stack.meme(keys[bob], query="dogs").status_code == 200
    assert stack.meme(keys[bob], query=f"a {FAULT_QUERY}").status_code == 502
    assert stack.meme(keys[carol]).status_code == 402

    phase1 = {c: stack.balance(k) for c, k in keys.items()}
    assert phase1 == {alice: 2, bob: 2, carol: 0}
    ends = ledger_end_offsets(stack)
    phase1_end_ms = int(time.time() * 1000)
    time.sleep(0.05)  # every later entry is stamped after the cut

    stack.purchase(carol, 4)
    assert stack.meme(keys[carol], query="rain").status_code == 200
    assert stack.meme(keys[alice], query="monday").status_code == 200
    rotated = stack.http.post(f"/v1/clients/{bob}/api-key", headers=stack.billing)
    assert rotated.status_code == 201, rotated.text
    keys[bob] = rotated.json()["api_key"]
    stack.purchase(bob, 10)
    final = {c: stack.balance(k) for c, k in keys.items()}
    assert final == {alice: 1, bob: 12, carol: 3}
    return Traffic(keys, phase1, ends, phase1_end_ms, final)


def test_a_replay_from_scratch_equals_the_live_balances(stack: Stack, traffic: Traffic) -> None:
    result = maas(stack, "replay")
    assert balances(result.stdout, traffic.keys) == traffic.final_balances
    assert re.search(r"entries=\d+ clients=\d+ seconds=[\d.]+ rate=", result.stderr)
    assert "VIOLATION" not in result.stderr

    alice = next(iter(traffic.keys))
    one = maas(stack, "replay", "--client", alice, "--quiet")
    assert list(table(one.stdout)) == [alice]
    assert balances(one.stdout, traffic.keys) == {alice: traffic.final_balances[alice]}


def test_as_of_offset_and_time_give_the_earlier_balances(stack: Stack, traffic: Traffic) -> None:
    spec = ",".join(f"{p}:{o}" for p, o in traffic.phase1_end_offsets.items())
    by_offset = maas(stack, "replay", "--quiet", "--as-of-offset", spec)
    assert balances(by_offset.stdout, traffic.keys) == traffic.phase1_balances

    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(traffic.phase1_end_ms // 1000))
    iso += f".{traffic.phase1_end_ms % 1000:03d}Z"
    by_time = maas(stack, "replay", "--quiet", "--as-of-time", iso)
    assert balances(by_time.stdout, traffic.keys) == traffic.phase1_balances

    nothing = maas(stack, "replay", "--quiet", "--as-of-offset", "0")
    assert table(nothing.stdout) == {}


def test_what_if_pricing(stack: Stack, traffic: Traffic) -> None:
    same = table(maas(stack, "replay", "--quiet", "--what-if-price", "standard=1,ai=1").stdout)
    for client in traffic.keys:
        assert same[client]["old_balance"] == same[client]["new_balance"]
        assert same[client]["rejected_under_new_price"] == "0"

    dearer = table(maas(stack, "replay", "--quiet", "--what-if-price", "standard=3").stdout)
    alice, _, carol = traffic.keys
    # alice: 5 tokens, 4 standard memes: one at 3 tokens, then 2 left: three rejections.
    assert (dearer[alice]["new_balance"], dearer[alice]["rejected_under_new_price"]) == ("2", "3")
    # carol: 4 tokens, one meme at 3.
    assert dearer[carol]["new_balance"] == "1"
    assert (dearer[carol]["old_charged"], dearer[carol]["new_charged"]) == ("1", "3")
    # The region is shared with other tests' clients: the total is their sum, whatever they did.
    total = dearer.pop("TOTAL")
    for column in ("old_charged", "new_charged", "old_refunded", "new_balance"):
        assert int(total[column]) == sum(int(row[column]) for row in dearer.values()), column


def test_export_is_readable_by_duckdb_and_matches_the_ledger(
    stack: Stack, traffic: Traffic, tmp_path: Path
) -> None:
    replay = maas(stack, "replay", "--quiet")
    counted = re.search(r"entries=(\d+)", replay.stderr)
    assert counted is not None, replay.stderr
    entries = int(counted.group(1))
    maas(stack, "export", "--out", str(tmp_path))

    ledger = f"read_parquet('{tmp_path}/ledger/*/*.parquet', hive_partitioning=true)"
    assert duckdb.sql(f"SELECT count(*) FROM {ledger}").fetchall()[0][0] == entries
    last = dict(
        duckdb.sql(
            f"SELECT client_id, arg_max(balance_after, seq) FROM {ledger} GROUP BY client_id"
        ).fetchall()
    )
    for client, balance in traffic.final_balances.items():
        assert last[client] == balance
    days = duckdb.sql(f"SELECT DISTINCT day FROM {ledger}").fetchall()
    assert len(days) >= 1

    clients = "', '".join(traffic.keys)
    requests = f"read_parquet('{tmp_path}/requests/*/*.parquet', hive_partitioning=true)"
    memes, with_query = duckdb.sql(
        f"SELECT count(*), count(query) FROM {requests} WHERE client_id IN ('{clients}')"
    ).fetchall()[0]
    assert memes == with_query == 8  # 6 in phase 1 (carol's 402 included), 2 in phase 2
    charged = duckdb.sql(
        f"SELECT count(*) FROM {ledger} WHERE type = 'TokensCharged' AND client_id IN ('{clients}')"
    ).fetchall()[0][0]
    assert charged == 7  # all but carol's 402
    _, bob, _ = traffic.keys
    key_changes = duckdb.sql(
        f"SELECT client_id, api_key_sha256, balance_after FROM {ledger} "
        f"WHERE type = 'ApiKeyRotated' AND client_id IN ('{clients}')"
    ).fetchall()
    bob_key_hash = hashlib.sha256(traffic.keys[bob].encode()).hexdigest()
    assert key_changes == [(bob, bob_key_hash, 2)]
    outcomes = f"read_parquet('{tmp_path}/outcomes/*/*.parquet', hive_partitioning=true)"
    failed = duckdb.sql(f"SELECT count(*) FROM {outcomes} WHERE type = 'MemeFailed'").fetchall()[0]
    assert failed[0] >= 1

    maas(stack, "export", "--out", str(tmp_path / "csv"), "--format", "csv")
    csv_rows = duckdb.sql(
        f"SELECT count(*) FROM read_csv('{tmp_path}/csv/ledger/*/*.csv', hive_partitioning=true)"
    ).fetchall()[0][0]
    assert csv_rows == entries
