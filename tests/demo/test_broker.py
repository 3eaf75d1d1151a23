"""LocalBroker: a private mosquitto started, stopped, restarted and killed by PID."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
from paho.mqtt import publish

from edged.demo.broker import LocalBroker
from edged.errors import BrokerError
from tests.helpers.broker import Subscriber, matching

pytestmark = pytest.mark.broker


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def alive(pid: int) -> bool:
    # LocalBroker reaps its child, so an ended broker's PID no longer exists.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_listens_and_stop_ends_the_process(tmp_path: Path) -> None:
    """start() returns once the port accepts connections; stop() ends that PID."""
    b = LocalBroker(workdir=tmp_path)
    b.start()
    try:
        pid = b.pid
        assert pid is not None
        assert accepts(b.port)
        assert "listener" in b.config_file.read_text()
    finally:
        b.stop()
    assert b.pid is None
    assert not alive(pid)
    assert not accepts(b.port)


def test_context_manager_removes_its_workdir() -> None:
    """Used as a context manager the broker runs inside the block and cleans up after."""
    with LocalBroker() as b:
        workdir, pid = b.workdir, b.pid
        assert b.running
    assert pid is not None
    assert not alive(pid)
    assert not workdir.exists()


def test_restart_keeps_port_and_retained_messages(tmp_path: Path) -> None:
    """restart() comes back on the same port with persisted retained messages."""
    with LocalBroker(workdir=tmp_path, persistence=True) as b:
        port, first_pid = b.port, b.pid
        with Subscriber(b.host, b.port, "keep/#") as sub:
            publish.single("keep/me", b"1", qos=1, retain=True, hostname=b.host, port=b.port)
            sub.wait_for(matching("keep/me", b"1"))
        b.restart()
        assert (b.port, b.pid != first_pid) == (port, True)
        with Subscriber(b.host, b.port, "keep/#") as again:
            assert again.wait_for(matching("keep/me", retain=True)).payload == b"1"


def test_kill_then_start_on_the_same_port(tmp_path: Path) -> None:
    """kill() ends mosquitto at once (SIGKILL); start() brings it back on the same port."""
    with LocalBroker(workdir=tmp_path) as b:
        pid, port = b.pid, b.port
        assert pid is not None
        b.kill()
        assert not b.running
        assert not alive(pid)
        b.start()
        assert b.port == port
        assert accepts(port)


def test_users_turn_off_anonymous_access(tmp_path: Path) -> None:
    """With users the password file holds hashes only and anonymous clients are refused."""
    with LocalBroker(workdir=tmp_path, users={"alice": "wonderland"}) as b:
        assert b.password_file is not None
        text = b.password_file.read_text()
        assert text.startswith("alice:$")
        assert "wonderland" not in text
        assert "allow_anonymous false" in b.config_file.read_text()
        with pytest.raises(AssertionError, match="SUBACK"):
            Subscriber(b.host, b.port, "#").start(timeout=0.5)


def test_start_failure_reports_mosquittos_log(tmp_path: Path) -> None:
    """When mosquitto cannot start, the error carries its log."""
    b = LocalBroker(workdir=tmp_path, tls_cert=tmp_path / "nope.crt", tls_key=tmp_path / "nope.key")
    try:
        with pytest.raises(BrokerError, match="exited") as info:
            b.start()
        assert "nope.crt" in str(info.value)
        assert not b.running
    finally:
        b.close()


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without mosquitto installed the error says how to install it."""
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with pytest.raises(BrokerError, match="apt-get install mosquitto"):
        LocalBroker()


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    """A given port that is already taken fails with mosquitto's reason."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        b = LocalBroker(workdir=tmp_path, port=taken.getsockname()[1])
        try:
            with pytest.raises(BrokerError, match="in use"):
                b.start()
        finally:
            b.close()
