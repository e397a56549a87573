"""The Jepsen checker on synthetic histories and topic contents, no Kafka: the verdict,
the synthetic data held to the service's own models, the history file, independence and
speed. The checks one by one are in ``test_jepsen_checks_requests.py`` and
``test_jepsen_checks_accounts.py``; ``Sim`` is in ``tests/unit/jepsen_sim.py``.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.jepsen.checker import MAX_PROBLEM_LINES, stable_request_id
from tests.jepsen.history import FIELDS, History, read_history
from tests.unit.jepsen_sim import TOPICS, Json, Sim, assert_only, busy


@pytest.fixture
def sim() -> Sim:
    return Sim()


# --- the verdict, the history file, independence ----------------------------------------


def test_problems_are_capped_with_a_count(sim: Sim) -> None:
    client = sim.register()
    for n in range(MAX_PROBLEM_LINES + 5):
        sim.line("meme", f"g{n}", client, params={"query": f"jepsen g{n}"}, status=402)
    verdict = sim.verdict()
    assert len(verdict.problems) == MAX_PROBLEM_LINES + 1
    assert verdict.problems[-1] == "... and 5 more problems"
    assert verdict.stats["problems"] == MAX_PROBLEM_LINES + 5


def test_unreadable_records_are_problems_not_crashes(sim: Sim) -> None:
    client, _ = busy(sim)
    sim.append(TOPICS.ledger, client, b"not json")
    sim.append(TOPICS.requests, client, b'{"type":"MemeRequested"}')
    verdict = sim.verdict()
    assert_only(verdict, "log", "not a JSON object")
    assert_only(verdict, "log", "type=MemeRequested: missing")


def test_the_synthetic_records_are_what_the_service_writes(sim: Sim) -> None:
    """Holds ``Sim`` to the service's own models (this test may import them; the checker
    may not): every record parses and re-serialises to the same bytes, so sha256 of a
    record is the service's ``entry_hash``, and the service's replay agrees."""
    from collections.abc import Callable

    from ledger.replay import Replay
    from ledger.state import (
        Record,
        decode_account,
        decode_purchase,
        decode_request,
        encode_record,
    )
    from schemas.events import dump, entry_hash, parse_entry, parse_input

    busy(sim)
    sim.meme(sim.register(), "rejected")
    on_ai = sim.register()
    sim.purchase(on_ai, 3)
    sim.subscribe(on_ai)
    sim.meme(on_ai, "delivered")
    sim.rotate(on_ai, grace_ms=5_000)  # the account then holds a replaced key
    entries = []
    for record in sim.records:
        raw = record.value or b""
        if record.topic == TOPICS.ledger:
            entry = parse_entry(raw)
            assert dump(entry) == raw and entry_hash(entry) == hashlib.sha256(raw).hexdigest()
            entries.append(entry)
        elif record.topic in (TOPICS.requests, TOPICS.purchases):
            assert dump(parse_input(raw)) == raw
    replay = Replay().apply_all(entries)
    assert not replay.violations
    live = {r.key: r.value for r in sim.records if r.topic == TOPICS.changelog}
    decoders: dict[bytes, Callable[[bytes], Record]] = {
        b"a": decode_account,
        b"r": decode_request,
        b"p": decode_purchase,
    }
    for key, value in live.items():
        decode = decoders.get((key or b"")[:1])
        if decode is not None and value is not None:
            assert encode_record(decode(value)) == value
    for client_id, account in replay.accounts.items():
        assert live[f"a/{client_id}".encode()] == encode_record(account)


def test_a_request_id_from_a_key_is_the_services(sim: Sim) -> None:
    from api.routes.memes import request_id_for

    assert stable_request_id("c1", "key-1") == request_id_for("c1", "key-1")


REPO_PACKAGES = ("api", "core", "ledger", "maas", "maas_client", "memes", "processors", "schemas")
ALLOWED = {"confluent_kafka", "__future__", *sys.stdlib_module_names}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


JEPSEN = Path(__file__).resolve().parents[1] / "jepsen"
# Every module of the checker package, and history.py beside it. The rest of
# tests/jepsen (region, workload, nemesis) drives the service and may import it.
JEPSEN_MODULES = sorted(
    path.relative_to(JEPSEN).as_posix()
    for path in [JEPSEN / "history.py", *(JEPSEN / "checker").rglob("*.py")]
)


def is_sibling(name: str) -> bool:
    """An import of the checker's own modules or of history.py, nothing else."""
    parts = name.split(".")
    if parts[:2] != ["tests", "jepsen"] or len(parts) < 3:
        return False
    path = JEPSEN.joinpath(*parts[2:])
    module = path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
    return module.is_file() and module.relative_to(JEPSEN).as_posix() in JEPSEN_MODULES


def test_the_independence_scan_sees_the_checker_package() -> None:
    assert {"history.py", "checker/__init__.py", "checker/__main__.py"} <= set(JEPSEN_MODULES)
    assert len([m for m in JEPSEN_MODULES if m.startswith("checker/")]) > 5


@pytest.mark.parametrize("module", JEPSEN_MODULES)
def test_the_checker_imports_nothing_of_the_service(module: str) -> None:
    for name in imports_of(JEPSEN / module):
        top = name.split(".")[0]
        assert top not in REPO_PACKAGES, f"{module} imports {name}"
        assert top in ALLOWED or is_sibling(name), f"{module} imports {name}"


def history_line(n: int) -> Json:
    return {name: None for name in FIELDS} | {
        "worker": n % 4, "op": "meme", "logical": f"l{n}", "attempt": 1,
        "invoke_ms": n, "complete_ms": n + 1, "method": "GET", "path": "/memes",
        "params": {"query": f"jepsen l{n}"},
    }  # fmt: skip


def test_history_lines_from_threads_and_tasks_are_whole(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    with History(path) as history:

        def write(start: int) -> None:
            for n in range(start, start + 200):
                history.record(history_line(n))

        threads = [threading.Thread(target=write, args=(k * 1000,)) for k in range(4)]
        for thread in threads:
            thread.start()

        async def tasks() -> None:
            async def one(n: int) -> None:
                history.record(history_line(n))

            await asyncio.gather(*(one(10_000 + n) for n in range(200)))

        asyncio.run(tasks())
        for thread in threads:
            thread.join()
    assert len(read_history(path)) == 1000


def test_history_drops_a_last_line_cut_by_a_kill_and_checks_fields(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    with History(path) as history:
        history.record(history_line(1))
    with path.open("a") as out:
        out.write('{"worker": 0, "op": "me')  # the writer died here
    assert [h["logical"] for h in read_history(path)] == ["l1"]
    with pytest.raises(ValueError, match="missing"), History(path) as history:
        history.record({"worker": 0})


def test_twenty_thousand_requests_check_in_a_few_seconds() -> None:
    sim = Sim(partitions=6)
    clients = [sim.register() for _ in range(100)]
    for client in clients:
        sim.purchase(client, 150)
    outcomes = ["delivered"] * 6 + ["failed", "expired", "rejected"]
    for n in range(20_000):
        client = clients[n % len(clients)]
        sim.meme(client, outcomes[n % len(outcomes)], key=f"k{n}" if n % 2 else None)
    # CPU time, not wall time: the machine running the tests may be busy with others.
    started = time.process_time()
    verdict = sim.verdict()
    elapsed_s = time.process_time() - started
    assert verdict.ok, verdict.report()
    assert verdict.stats["meme_ops"] == 20_000
    assert elapsed_s < 15, f"check took {elapsed_s:.1f} s"
