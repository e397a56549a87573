"""``maas audit``: verify the ledger's hash chains and signed checkpoints.

- ``maas audit dump --file PATH``: the ledger topic as JSON lines,
  ``{"partition": P, "offset": O, "entry": {...}}``, in log order per partition;
- ``maas audit verify [--file PATH]``: every client's chain (``ledger.audit.verify``)
  and every checkpoint of ``<region>.ledger-checkpoints``, over the ledger topic or a
  dump of it. One ``finding kind=... client_id=... seq=...`` line per problem on stdout,
  a summary line last; exit status 1 if anything was found;
- ``maas audit checkpoint``: read the ledger topic to its end and append one signed
  checkpoint per partition (``MAAS_AUDIT_SIGNING_KEY``) to ``<region>.ledger-checkpoints``,
  created on first use (one partition, kept forever, not compacted: every checkpoint
  ever signed stays, so an old one still shows a later cut). With ``--loop`` it signs
  again every ``MAAS_AUDIT_CHECKPOINT_INTERVAL_S`` seconds until stopped (``maas up``
  runs it so), each time only the partitions that grew since its last checkpoint; a
  round reads only what the ledger gained since the one before (each partition's head
  rolls on), so its cost follows the traffic, not the ledger's age.

Progress (entries read, rate) goes to stderr every ``PROGRESS_EVERY`` entries.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from pydantic import ValidationError

from core import logs
from core.readiness import mark_ready, take_over
from core.settings import Settings
from core.topic_reader import position_of, read_topic
from core.topics import Topics
from ledger.audit import (
    Checkpoint,
    Finding,
    Logged,
    roll_head,
    sign_checkpoint,
    verify_all,
)
from maas.arguments import existing_file, new_file
from schemas.events import ENTRY_ADAPTER, GENESIS_HASH, dump, parse_entry

log = logging.getLogger("maas.audit")

PROGRESS_EVERY = 50_000
METADATA_TIMEOUT_S = 30.0


def register(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="verify the ledger's hash chains and checkpoints")
    commands = audit.add_subparsers(dest="audit_command", required=True)
    verify_cmd = commands.add_parser("verify", help="check every chain and checkpoint")
    verify_cmd.add_argument(
        "--file", type=existing_file, help="a dump (maas audit dump) instead of Kafka"
    )
    verify_cmd.add_argument("--no-checkpoints", action="store_true", help="check the chains only")
    verify_cmd.set_defaults(func=_verify)
    dump_cmd = commands.add_parser("dump", help="the ledger topic as JSON lines")
    dump_cmd.add_argument("--file", type=new_file, required=True)
    dump_cmd.set_defaults(func=_dump)
    checkpoint_cmd = commands.add_parser("checkpoint", help="sign each partition's head")
    checkpoint_cmd.add_argument(
        "--loop",
        action="store_true",
        help="sign again every MAAS_AUDIT_CHECKPOINT_INTERVAL_S seconds, until stopped",
    )
    checkpoint_cmd.set_defaults(func=_checkpoint)


# --- reading ---------------------------------------------------------------------------


class _Progress:
    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.started = time.monotonic()

    def tick(self) -> None:
        self.count += 1
        if self.count % PROGRESS_EVERY == 0:
            rate = self.count / max(time.monotonic() - self.started, 1e-9)
            print(
                f"\r{self.what} entries={self.count} rate={rate:,.0f}/s",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def done(self) -> None:
        if self.count >= PROGRESS_EVERY:
            print(file=sys.stderr)


def _unreadable(
    error: Exception, partition: int | None = None, offset: int | None = None, where: str = ""
) -> Finding:
    text = str(error).splitlines()[0] if str(error) else ""
    detail = f"{where}{type(error).__name__}: {text}"
    return Finding(
        kind="unreadable", partition=partition, offset=offset, detail=detail.replace('"', "'")
    )


def _topic_entries(settings: Settings, unreadable: list[Finding]) -> Iterator[Logged]:
    for msg in read_topic(settings, Topics(settings.region).ledger):
        _, partition, offset = position_of(msg)
        try:
            entry = parse_entry(msg.value() or b"")
        except ValidationError as exc:
            unreadable.append(_unreadable(exc, partition, offset))
            continue
        yield Logged(partition, offset, entry)


def _file_entries(path: Path, unreadable: list[Finding]) -> Iterator[Logged]:
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                yield Logged(
                    int(record["partition"]),
                    int(record["offset"]),
                    ENTRY_ADAPTER.validate_python(record["entry"]),
                )
            except (ValueError, KeyError, TypeError, ValidationError) as exc:
                # Its partition and offset cannot be trusted: name the line instead.
                unreadable.append(_unreadable(exc, where=f"line {number}: "))


def _topic_exists(settings: Settings, topic: str) -> bool:
    admin = AdminClient(settings.kafka_common())
    return topic in admin.list_topics(timeout=METADATA_TIMEOUT_S).topics


def _read_checkpoints(settings: Settings) -> list[Checkpoint]:
    topic = Topics(settings.region).ledger_checkpoints
    if not _topic_exists(settings, topic):
        return []
    return [
        Checkpoint.model_validate_json(msg.value() or b"") for msg in read_topic(settings, topic)
    ]


def _signing_key(settings: Settings) -> str:
    settings.require_secrets("audit_signing_key")
    return settings.audit_signing_key.get_secret_value()


# --- commands --------------------------------------------------------------------------


def _dump(args: argparse.Namespace) -> int:
    logs.configure("audit")
    settings = Settings.from_env()
    progress = _Progress("dumped")
    started = time.monotonic()
    with args.file.open("wb") as out:
        for msg in read_topic(settings, Topics(settings.region).ledger):
            entry = json.loads(msg.value() or b"")  # as written: a dump is a copy, not a rewrite
            line = {"partition": msg.partition(), "offset": msg.offset(), "entry": entry}
            out.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
            progress.tick()
    progress.done()
    print(
        f"audit dump file={args.file} entries={progress.count} "
        f"seconds={time.monotonic() - started:.2f}"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    logs.configure("audit")
    settings = Settings.from_env()
    started = time.monotonic()
    unreadable: list[Finding] = []
    source: Iterable[Logged] = (
        _file_entries(args.file, unreadable) if args.file else _topic_entries(settings, unreadable)
    )
    checkpoints: list[Checkpoint] = []
    key = ""
    if not args.no_checkpoints:
        ledger_topic = Topics(settings.region).ledger
        try:
            checkpoints = [cp for cp in _read_checkpoints(settings) if cp.topic == ledger_topic]
        except KafkaException as exc:
            if not args.file:
                raise
            # An auditor with a dump and no broker: say how to check what can be checked.
            print(
                f"maas audit: the checkpoints come from Kafka ({exc.args[0].str()}); "
                "--no-checkpoints checks the dump's chains alone",
                file=sys.stderr,
            )
            return 1
        key = _signing_key(settings)
    progress = _Progress("verified")

    def counted() -> Iterator[Logged]:
        for item in source:
            progress.tick()
            yield item

    # One pass over the log serves the chains and the checkpoints, holding no entry.
    report, checkpoint_findings = verify_all(counted(), checkpoints, key)
    progress.done()
    findings = unreadable + report.findings + checkpoint_findings
    for finding in findings:
        print(f"finding {finding.line()}")
    print(
        f"audit verify source={args.file or 'kafka'} entries={report.entries} "
        f"clients={report.clients} checkpoints={len(checkpoints)} findings={len(findings)} "
        f"seconds={time.monotonic() - started:.2f} result={'ok' if not findings else 'FAILED'}"
    )
    return 1 if findings else 0


def _checkpoint(args: argparse.Namespace) -> int:
    logs.configure("audit")
    settings = Settings.from_env()
    if not args.loop:
        return 0 if _sign_heads(settings, {}, {}) else 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    interval_s = settings.audit_checkpoint_interval_s
    log.info("audit checkpoints every interval_s=%d", interval_s)
    take_over(settings.ready_file, settings.predecessor_pid)  # one signer at a time
    mark_ready(settings.ready_file)
    heads: dict[int, PartitionHead] = {}
    signed: dict[int, int] = {}
    while not stop.is_set():
        try:
            _sign_heads(settings, heads, signed)
        except KafkaException as exc:
            # The heads hold what was read; the next round goes on from there.
            log.error("audit checkpoint round failed error=%s", exc.args[0])
        stop.wait(interval_s)
    return 0


class PartitionHead(NamedTuple):
    """One partition's ``chain_head`` over the entries read so far, and where it is."""

    offset: int = -1  # of the last entry read; -1 before any
    head: str = GENESIS_HASH
    entries: int = 0


def _sign_heads(
    settings: Settings, heads: dict[int, PartitionHead], signed: dict[int, int]
) -> bool:
    """Roll each partition's head over what the ledger gained since ``heads`` (all of it
    when empty), then sign every partition whose head moved past ``signed``'s offset.

    Both are updated: the next round reads only what came after, and a round holds one
    head per partition, not the log (which is kept forever: reading all of it every
    round grew without bound). ``signed`` (partition -> offset signed) takes only what
    was delivered. False if a checkpoint was not delivered.
    """
    started = time.monotonic()
    ledger_topic = Topics(settings.region).ledger
    admin = AdminClient(settings.kafka_common())
    metadata = admin.list_topics(ledger_topic, timeout=METADATA_TIMEOUT_S).topics[ledger_topic]
    if metadata.error is not None:
        raise KafkaException(metadata.error)
    progress = _Progress("read")
    after = {partition: at.offset + 1 for partition, at in heads.items()}
    for msg in read_topic(settings, ledger_topic, start=after):
        _, partition, offset = position_of(msg)
        was = heads.get(partition, PartitionHead())
        entry = parse_entry(msg.value() or b"")
        heads[partition] = PartitionHead(offset, roll_head(was.head, entry), was.entries + 1)
        progress.tick()
    progress.done()
    topic = Topics(settings.region).ledger_checkpoints
    producer = Producer({**settings.kafka_common(), "acks": "all", "enable.idempotence": True})
    key = _signing_key(settings)
    failed: list[str] = []
    signing: dict[int, int] = {}

    def delivered(error: KafkaError | None, _msg: object) -> None:
        if error is not None:
            failed.append(error.name())

    for partition in sorted(metadata.partitions):
        at = heads.get(partition, PartitionHead())
        if signed.get(partition) == at.offset:
            continue  # nothing new since this process signed it
        checkpoint = sign_checkpoint(ledger_topic, partition, at.offset, at.head, key)
        producer.produce(
            topic, key=str(partition).encode(), value=dump(checkpoint), on_delivery=delivered
        )
        signing[partition] = at.offset
        print(
            f"audit checkpoint topic={ledger_topic} partition={partition} offset={at.offset} "
            f"entries={at.entries} head={checkpoint.head}",
            flush=True,
        )
    print(
        f"audit round entries_read={progress.count} checkpoints={len(signing)} "
        f"seconds={time.monotonic() - started:.2f}",
        flush=True,
    )
    if producer.flush(METADATA_TIMEOUT_S) != 0 or failed:
        print(f"audit checkpoint error=not_delivered kafka_codes={failed}", file=sys.stderr)
        return False
    signed.update(signing)
    return True
