"""``core.broker_reach.any_broker_listens``: a listening socket counts (also one whose
process answers nothing, as a paused broker's kernel still accepts), a closed port
does not, and every form of librdkafka's list is read."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from core.broker_reach import any_broker_listens
from maas.broker import free_port


@pytest.fixture
def listening() -> Iterator[int]:
    """A socket that listens and never accepts: the kernel completes the handshake."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def test_a_listening_broker_counts_whatever_else_is_in_the_list(listening: int) -> None:
    closed = free_port()
    assert any_broker_listens(f"127.0.0.1:{listening}", 1.0)
    assert any_broker_listens(f"127.0.0.1:{closed}, PLAINTEXT://127.0.0.1:{listening}", 1.0)
    assert any_broker_listens(f"[::1]:{closed},localhost:{listening}", 1.0)


def test_no_listening_broker_or_an_unreadable_list_is_none() -> None:
    assert not any_broker_listens(f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}", 1.0)
    assert not any_broker_listens("no-port-here", 1.0)
