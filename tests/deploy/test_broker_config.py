"""The role's broker configuration keeps what mosquitto acknowledged across its restarts.

The daemon deletes a result once the broker acknowledged it (PUBACK); from
then on only the broker holds it. The role's template
(roles/edged/templates/mosquitto-edged.conf.j2) is rendered by Ansible with
the role's defaults and run by a real mosquitto on the host: QoS 1 messages
queued for an offline persistent subscriber survive a clean restart and a
crash after an autosave. The same configuration without persistence loses
them, which is what happened to 438 of 13,203 messages across 50 restarts.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edged.demo.broker import free_port
from tests.deploy.conftest import require_deploy_tools
from tests.deploy.machine import ANSIBLE_DIR, run, tool_env
from tests.deploy.mqtt import accepts, publish_acknowledged
from tests.helpers.broker import Subscriber

pytestmark = pytest.mark.deploy

ROLE = ANSIBLE_DIR / "roles" / "edged"
USER, PASSWORD = "dashboard", "broker-Pa55word"
TOPIC = "edged/dev1/door/detections"
#: More than mosquitto's default max_queued_messages (1000), which the role raises.
MESSAGES = 1500
PAYLOADS = [str(i).encode() for i in range(MESSAGES)]


def render(tmp_path: Path, **variables: Any) -> Path:
    """The role's conf.d file, rendered by Ansible with the role's defaults and ``variables``."""
    dest = tmp_path / "edged.conf"
    run(
        [
            "ansible", "localhost", "-m", "ansible.builtin.template",
            "-a", f"src={ROLE / 'templates' / 'mosquitto-edged.conf.j2'} dest={dest}",
            "-e", f"@{ROLE / 'defaults' / 'main.yml'}",
            "-e", f"@{ROLE / 'vars' / 'main.yml'}",
            "-e", json.dumps(variables),
        ],
        cwd=tmp_path,
        env=tool_env(),
    )  # fmt: skip
    return dest


@contextlib.contextmanager
def mosquitto(config: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """mosquitto on ``config`` until the block ends (or the test kills it), ended by PID."""
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            ["mosquitto", "-c", str(config)], stdout=fh, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while not accepts(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mosquitto did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # a clean stop saves the persistence file
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def broker_config(tmp_path: Path, *, persistent: bool, **variables: Any) -> tuple[Path, int]:
    """The rendered configuration on a free loopback port with one user; optionally unpersisted."""
    port = free_port()
    persist = tmp_path / "persist"
    persist.mkdir()
    passwd = tmp_path / "passwd"
    passwd.write_text(f"{USER}:{PASSWORD}\n")
    run(["mosquitto_passwd", "-U", passwd])
    config = render(
        tmp_path,
        edged_broker_listener_address="127.0.0.1",
        edged_broker_listener_port=port,
        edged_broker_persistence_location=str(persist),
        edged_broker_passwd_file=str(passwd),
        edged_broker_users=[{"username": USER, "password": PASSWORD}],
        **variables,
    )
    text = config.read_text()
    assert "persistence true" in text
    assert f"max_queued_messages {MESSAGES}" not in text  # the role's figure is higher
    if not persistent:
        text = text.replace("persistence true", "persistence false")
    # As root, mosquitto drops to the user "mosquitto", which cannot enter
    # pytest's private temporary directory; the Debian layout it is meant
    # for gives that user its own directories (the role creates them).
    config.write_text(text + "user root\n")
    return config, port


def queued_then_restarted(
    tmp_path: Path,
    config: Path,
    port: int,
    stop: signal.Signals,
    wait_s: float = 0,
    patience_s: float = 10,
) -> set[bytes]:
    """Queue MESSAGES for an offline persistent subscriber, stop the broker with ``stop``,
    start it again, and return the payloads the subscriber receives within ``patience_s``."""
    log = tmp_path / "mosquitto.log"
    sub_args: dict[str, Any] = {"username": USER, "password": PASSWORD, "client_id": "dash-1"}
    with mosquitto(config, port, log) as proc:
        Subscriber("127.0.0.1", port, TOPIC, **sub_args).start().close()  # session, then away
        publish_acknowledged(port, TOPIC, PAYLOADS, USER, PASSWORD)
        time.sleep(wait_s)
        proc.send_signal(stop)
        proc.wait(10)
    with mosquitto(config, port, log), Subscriber("127.0.0.1", port, TOPIC, **sub_args) as sub:
        deadline = time.monotonic() + patience_s
        while len(sub.messages()) < MESSAGES and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # anything still arriving would be a duplicate
        return {m.payload for m in sub.messages()}


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_deploy_tools("ansible", "mosquitto", "mosquitto_passwd")


def test_queued_messages_survive_a_clean_broker_restart(tmp_path: Path) -> None:
    """Every acknowledged QoS 1 message queued for a persistent session arrives after a restart."""
    config, port = broker_config(tmp_path, persistent=True)
    got = queued_then_restarted(tmp_path, config, port, signal.SIGTERM)
    assert got == set(PAYLOADS)


def test_queued_messages_survive_a_broker_crash_after_an_autosave(tmp_path: Path) -> None:
    """A SIGKILL after autosave_interval loses nothing acknowledged before that autosave."""
    config, port = broker_config(tmp_path, persistent=True, edged_broker_autosave_interval_s=1)
    assert "autosave_interval 1\n" in config.read_text()
    got = queued_then_restarted(tmp_path, config, port, signal.SIGKILL, wait_s=2.5)
    assert got == set(PAYLOADS)


def test_without_persistence_the_same_restart_loses_them(tmp_path: Path) -> None:
    """The control: the role's configuration with `persistence false` loses every queued message."""
    config, port = broker_config(tmp_path, persistent=False)
    # A resumed session gets its queue at once; 2 s is ample to see nothing come.
    got = queued_then_restarted(tmp_path, config, port, signal.SIGTERM, patience_s=2)
    assert got == set()
