"""``maas kafka start|stop|status|logs``: the local single-node broker of ``maas.broker``.

Output is one ``key=value`` line per event so scripts can grep it. When
``KAFKA_BOOTSTRAP_SERVERS`` names a cluster, that cluster is used and nothing is started.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from core.settings import Settings
from maas.broker import BrokerError, LocalBroker

DEFAULT_PORT = 9092


def say(**fields: object) -> None:
    parts = []
    for key, value in fields.items():
        text = str(value)
        parts.append(f"{key}={text!r}" if (" " in text or not text) else f"{key}={text}")
    print(" ".join(parts), flush=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    kafka = subparsers.add_parser("kafka", help="run a local single-node Kafka broker")
    sub = kafka.add_subparsers(dest="kafka_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--home", type=Path, default=None, help="default: <data_dir>/kafka")
        p.add_argument("--port", type=int, default=None, help=f"default: {DEFAULT_PORT}")

    start = sub.add_parser("start", help="start the broker (format storage on first use)")
    common(start)
    start.add_argument("--timeout", type=float, default=120, help="seconds to wait for it")
    start.set_defaults(func=cmd_start)

    stop = sub.add_parser("stop", help="stop the broker (SIGTERM, then SIGKILL)")
    common(stop)
    stop.set_defaults(func=cmd_stop)

    status = sub.add_parser("status", help="is the broker running? (exit 1 if not)")
    common(status)
    status.set_defaults(func=cmd_status)

    logs = sub.add_parser("logs", help="print the end of the broker log")
    common(logs)
    logs.add_argument("-n", "--lines", type=int, default=40)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.set_defaults(func=cmd_logs)


def _broker(args: argparse.Namespace) -> LocalBroker:
    home = args.home or Settings.from_env().data_dir / "kafka"
    # Without --port, stop/status/logs find the port the broker was last started with.
    port = args.port or _configured_port(home) or DEFAULT_PORT
    return LocalBroker(home, port=port)


def _configured_port(home: Path) -> int | None:
    try:
        lines = (home / "config" / "server.properties").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("advertised.listeners="):
            return int(line.rsplit(":", 1)[1])
    return None


def _external() -> str | None:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None


def cmd_start(args: argparse.Namespace) -> int:
    if external := _external():
        say(event="kafka_external", bootstrap=external, note="KAFKA_BOOTSTRAP_SERVERS is set")
        return 0
    broker = _broker(args)
    was_running = broker.is_running()
    if not was_running and args.port is None:
        broker.port = DEFAULT_PORT  # a new start uses the default, not the last port
    started = time.monotonic()
    try:
        broker.start(timeout_s=args.timeout)
    except BrokerError as exc:
        say(event="kafka_start_failed", home=broker.home, log=broker.log_path)
        print(exc, file=sys.stderr)
        return 1
    say(
        event="kafka_already_running" if was_running else "kafka_started",
        bootstrap=broker.bootstrap,
        pid=broker.pid(),
        seconds=f"{time.monotonic() - started:.1f}",
        log=broker.log_path,
    )
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    if external := _external():
        say(event="kafka_external", bootstrap=external, note="not started here; not stopped")
        return 0
    broker = _broker(args)
    if not broker.is_running():
        say(event="kafka_not_running", home=broker.home)
        return 0
    broker.stop()
    say(event="kafka_stopped", home=broker.home)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if external := _external():
        say(kafka="external", bootstrap=external)
        return 0
    broker = _broker(args)
    pid = broker.pid()
    if pid is None:
        say(kafka="stopped", home=broker.home)
        return 1
    say(kafka="running", pid=pid, bootstrap=broker.bootstrap, log=broker.log_path)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    broker = _broker(args)
    path = broker.log_path
    if not path.is_file():
        say(event="kafka_no_log", log=path)
        return 1
    sys.stdout.write(broker.tail(args.lines))
    sys.stdout.flush()
    if not args.follow:
        return 0
    try:
        with path.open(errors="replace") as f:
            f.seek(0, os.SEEK_END)
            while True:
                line = f.readline()
                if line:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                else:
                    time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
