"""Whether a client can reach a broker: librdkafka's word that it lost a broker
connection, or them all, and whether any bootstrap broker listens (a TCP connection, no
Kafka request).

librdkafka says ``_ALL_BROKERS_DOWN`` (error_cb) when a client's last broker connection
goes down, also when a connection closed idle would come back at the next request: the
word alone proves nothing, so it is checked by a connection. A paused broker (SIGSTOP,
a long GC pause) still accepts connections, its kernel does: only a dead one, or one cut
off by the network, is unreachable here. That is the point: a Kafka request (metadata)
sent to a paused broker of a healthy cluster times out like one sent to a dead broker
alone.
"""

from __future__ import annotations

import logging
import socket
import time

from confluent_kafka import KafkaError

LOST_CONNECTION = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN})


class LostBrokers:
    """A client's error_cb (served in its ``poll``): ``at``, when librdkafka last said
    it lost a broker connection (``time.monotonic()``); ``all_down``, set once it said it
    lost every one, until the holder clears it. Other errors are logged: with a callback
    set librdkafka logs none itself (its lost connections it logs anyway). Apart from
    the client's owner, so that the client holding the callback holds no cycle back to
    it: an owner dropped, with its clients' threads, goes at once, not at the next
    garbage collection."""

    def __init__(self, log: logging.Logger) -> None:
        self.at: float | None = None
        self.all_down = False
        self.log = log

    def note(self, error: KafkaError) -> None:
        code = error.code()
        if code not in LOST_CONNECTION:
            self.log.warning("kafka client error code=%s error=%s", error.name(), error.str())
            return
        self.at = time.monotonic()
        if code == KafkaError._ALL_BROKERS_DOWN:
            self.all_down = True


def any_broker_listens(bootstrap_servers: str, timeout_s: float) -> bool:
    """Whether a TCP connection to any of ``bootstrap_servers`` (librdkafka's list:
    ``host:port`` or ``proto://host:port``, comma-separated) opens within ``timeout_s``
    each."""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition("://")[2].rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False
