"""The history of a fault run: one JSON object per line, one line per HTTP exchange.

A line is one *attempt* (each retry separately), written when the attempt completes::

    {"worker": 3, "op": "meme", "logical": "w3-17", "attempt": 2, "client_id": "5f0c...",
     "invoke_ms": 1760000000000, "complete_ms": 1760000000040,
     "method": "GET", "path": "/memes", "params": {"lat": 1.0, "lon": 2.0,
     "query": "jepsen w3-17"}, "idempotency_key": "w3-17", "body": null,
     "status": 200, "error": null, "response": {...}}

``status`` null means no HTTP answer (transport error, client timeout): the outcome is
indeterminate. ``logical`` names the client-side operation; all its retries share it.

This module and ``tests.jepsen.checker`` are the oracle of the fault scenario: they
import nothing of the service (only the standard library and ``confluent_kafka``), so a
bug in the service's code cannot hide itself by also being in the checker.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, get_args

Op = Literal["register", "purchase", "subscribe", "rotate", "meme", "me", "lookup"]
OPS: frozenset[str] = frozenset(get_args(Op))
FIELDS: tuple[str, ...] = (
    "worker",
    "op",
    "logical",
    "attempt",
    "client_id",
    "invoke_ms",
    "complete_ms",
    "method",
    "path",
    "params",
    "idempotency_key",
    "body",
    "status",
    "error",
    "response",
)


def wall_ms() -> int:
    """Wall clock in epoch milliseconds, the clock of ``invoke_ms`` and ``complete_ms``."""
    return time.time_ns() // 1_000_000


def validate(line: dict[str, Any]) -> None:
    """Raise ValueError unless ``line`` has exactly the history's fields, sensibly typed."""
    keys = set(line)
    if keys != set(FIELDS):
        missing, extra = sorted(set(FIELDS) - keys), sorted(keys - set(FIELDS))
        raise ValueError(f"history line fields: missing={missing} extra={extra}")
    if line["op"] not in OPS:
        raise ValueError(f"unknown op {line['op']!r}")
    for name in ("worker", "attempt", "invoke_ms", "complete_ms"):
        if not isinstance(line[name], int):
            raise ValueError(f"{name} must be an int, got {line[name]!r}")
    if line["status"] is not None and not isinstance(line["status"], int):
        raise ValueError(f"status must be an int or null, got {line['status']!r}")


class History:
    """Append-only history file, safe to share between threads and asyncio tasks.

    Each line is written and flushed under a lock: a write is a few microseconds, so an
    event loop may call ``record`` directly. Flushing per line means a run that is
    killed keeps every exchange that completed before the kill (the OS has the bytes).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")

    def record(self, line: dict[str, Any]) -> None:
        validate(line)
        text = json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n"
        with self._lock:
            self._file.write(text)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> History:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """Every line of a history file, in file order.

    A last line cut short (the writer was killed mid-write) is dropped: it is one
    exchange whose outcome the run never recorded, i.e. indeterminate. A bad line
    anywhere else is an error.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    history: list[dict[str, Any]] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not JSON") from None
        validate(line)
        history.append(line)
    return history
