"""Several API processes share one port through SO_REUSEPORT; nothing else shares it."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys

import pytest

from maas.api_cli import check_port_free, shared_socket


def test_api_sockets_share_a_port() -> None:
    with shared_socket("127.0.0.1", 0) as first:
        port = first.getsockname()[1]
        first.listen()
        with shared_socket("127.0.0.1", port) as second:
            second.listen()
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass


def test_an_api_socket_cannot_join_a_port_held_by_another_server() -> None:
    with socket.create_server(("127.0.0.1", 0)) as foreign:  # no SO_REUSEPORT
        port = foreign.getsockname()[1]
        with pytest.raises(OSError) as error:
            shared_socket("127.0.0.1", port)
    assert error.value.errno == errno.EADDRINUSE


def test_the_api_process_exits_loudly_on_a_port_held_by_another_server() -> None:
    with socket.create_server(("127.0.0.1", 0)) as foreign:
        port = foreign.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "maas.cli", "api", "--port", str(port)],
            env={**os.environ, "MAAS_DEV_MODE": "1"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"api cannot bind host=127.0.0.1 port={port}" in done.stderr
    assert "another process holds the port" in done.stderr


def test_a_free_port_is_free_and_a_shared_one_is_not() -> None:
    with shared_socket("127.0.0.1", 0) as api:
        port = api.getsockname()[1]
        check_port_free("127.0.0.1", port)  # bound, not listening yet: nobody serves it
        api.listen()
        # A stale API of an earlier run would share the port without a word: refused.
        with pytest.raises(ValueError, match=f"--port {port}: 127.0.0.1:{port} is taken"):
            check_port_free("127.0.0.1", port)


def test_the_api_raises_its_open_files_limit_to_the_hard_limit() -> None:
    """Each kept-alive client connection is an open file: a process started with a low
    soft limit (1024 is common) raises it to its hard limit."""
    code = (
        "import resource\n"
        "from maas.api_cli import raise_open_files_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))\n"
        "print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    returned, soft, hard = map(int, done.stdout.split())
    assert hard > 64  # so a raised limit differs from the one set here
    assert returned == soft == hard
