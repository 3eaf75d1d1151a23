"""sd_notify over a real unix datagram socket, without systemd."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.daemon.notify import Notifier, watchdog_interval_s


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(2)
    yield sock
    sock.close()


def test_ready_reaches_the_socket(notify_socket: socket.socket) -> None:
    """READY=1 with a STATUS line arrives as one datagram."""
    n = Notifier(notify_socket.getsockname())
    n.ready("2 pipelines running")
    assert notify_socket.recv(4096).decode().split("\n") == [
        "READY=1",
        "STATUS=2 pipelines running",
    ]
    n.close()


def test_abstract_socket_address() -> None:
    """An '@name' address reaches an abstract-namespace socket."""
    name = f"edged-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        n = Notifier("@" + name)
        n.watchdog()
        assert sock.recv(100) == b"WATCHDOG=1"
        n.close()
    finally:
        sock.close()


def test_without_notify_socket_it_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside systemd the notifier is disabled and sending does nothing."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    n.ready()


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ping interval is half the configured watchdog timeout, and only for our PID."""
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval_s() == 2.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval_s() is None
