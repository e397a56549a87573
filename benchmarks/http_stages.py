"""Where a request's time goes in ``http_bench.py``: stages from Kafka timestamps.

After an open-loop run against the service, its topics are read back and each answered
request is joined across its events and the client's receive time of the response.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from common import percentile

STAGES = (
    ("append_to_decision", "api append -> ledger decision (approval produced)"),
    ("decision_to_meme", "decision -> meme made (txn commit, generator fetch, render)"),
    ("meme_to_reply", "meme made -> answer produced (outcome acked, or the ledger's batch)"),
    ("reply_to_response", "answer produced -> HTTP response (api fetch)"),
    ("append_to_response", "total: api append -> HTTP response"),
    ("decision_to_meme_ai", "  of which AI memes: decision -> meme made"),
    ("append_to_response_ai", "  of which AI memes: total"),
    ("append_to_response_standard", "  of which standard memes: total"),
)


def stage_breakdown(bootstrap: str, region: str, done_at: dict[str, float]) -> dict[str, Any]:
    """Where a request's time goes, from the Kafka timestamps of its events.

    Every message carries the time its producer called ``produce`` (CreateTime, ms):
    the API's ``MemeRequested``, the ledger's ``MemeApproved`` (in its transaction),
    the generator's ``MemeGenerated`` and the first ``Reply`` to the request: the
    generator's for a meme made in time (produced once its outcome is acknowledged),
    else the ledger's (then the last stage includes its transaction's commit). Joined by
    request id (and the reply's correlation id), with the client's receive time.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from core.batching import take_batch
    from core.topics import Topics

    topics = Topics(region)
    names = [topics.requests, topics.approved("standard"), topics.approved("ai")]
    names += [topics.outcomes, topics.replies]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-stages-{os.getpid()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    requested: dict[str, tuple[int, str]] = {}  # request_id -> (ms, event_id)
    approved: dict[str, int] = {}
    ai: set[str] = set()  # request ids approved as AI memes (their own topic)
    made: dict[str, int] = {}
    replied: dict[str, int] = {}  # correlation_id -> ms
    try:
        metadata = consumer.list_topics(timeout=10)
        assignment = [
            TopicPartition(name, p, OFFSET_BEGINNING)
            for name in names
            for p in metadata.topics[name].partitions
        ]
        consumer.assign(assignment)
        pending = {(tp.topic, tp.partition) for tp in assignment}
        give_up = time.monotonic() + 120
        while pending and time.monotonic() < give_up:
            for msg in take_batch(consumer, 1000, 1.0):
                if (error := msg.error()) is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard((msg.topic(), msg.partition()))
                    continue
                event = json.loads(msg.value() or b"")
                ms = msg.timestamp()[1]
                topic = msg.topic()
                if topic == topics.requests:
                    if event.get("type") == "MemeRequested":
                        # The first append of the id: a retry's own is not the request's.
                        requested.setdefault(event["request_id"], (ms, event["event_id"]))
                elif topic == topics.outcomes:
                    made.setdefault(event["request_id"], ms)
                elif topic == topics.replies:
                    replied.setdefault(event["correlation_id"], ms)
                else:
                    approved.setdefault(event["request_id"], ms)
                    if topic == topics.approved("ai"):
                        ai.add(event["request_id"])
    finally:
        consumer.close()
    series: dict[str, list[float]] = {key: [] for key, _ in STAGES}
    for request_id, done in done_at.items():
        if request_id not in requested:
            continue
        t_req, event_id = requested[request_id]
        t_appr, t_made, t_reply = (
            approved.get(request_id),
            made.get(request_id),
            replied.get(event_id),
        )
        if t_appr is None or t_made is None or t_reply is None:
            continue
        done_ms = done * 1000
        series["append_to_decision"].append(t_appr - t_req)
        series["decision_to_meme"].append(t_made - t_appr)
        series["meme_to_reply"].append(t_reply - t_made)
        series["reply_to_response"].append(done_ms - t_reply)
        series["append_to_response"].append(done_ms - t_req)
        kind = "ai" if request_id in ai else "standard"
        series[f"append_to_response_{kind}"].append(done_ms - t_req)
        if kind == "ai":
            series["decision_to_meme_ai"].append(t_made - t_appr)
    out: dict[str, Any] = {"requests_joined": len(series["append_to_response"])}
    for key, values in series.items():
        values.sort()
        out[key] = {f"p{q}_ms": round(percentile(values, q), 1) for q in (50, 90, 99)}
    return out


def print_stages(stages: dict[str, Any]) -> None:
    print(f"    where the time goes ({stages['requests_joined']} requests, Kafka timestamps):")
    for key, label in STAGES:
        s = stages[key]
        print(
            f"      {label:62} p50 {s['p50_ms']:7.1f}  p90 {s['p90_ms']:7.1f}  "
            f"p99 {s['p99_ms']:7.1f} ms"
        )
