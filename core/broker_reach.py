"""Whether any bootstrap broker listens: a TCP connection, no Kafka request.

A paused broker (SIGSTOP, a long GC pause) still accepts connections, its kernel does:
only a dead one, or one cut off by the network, is unreachable here. That is the point:
a Kafka request (metadata) sent to a paused broker of a healthy cluster times out like
one sent to a dead broker alone.
"""

from __future__ import annotations

import socket


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
