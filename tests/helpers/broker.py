"""Real-broker fixtures: a private mosquitto per test, TLS material, a recording subscriber.

Every broker is a :class:`~edged.demo.broker.LocalBroker` on a free 127.0.0.1 port,
ended by PID in the fixture's teardown, so a failing test cannot leak a
process. Import the fixtures into a conftest with
``from tests.helpers.broker import *``.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edged.config.settings import MqttSettings
from edged.demo.broker import LocalBroker

__all__ = [
    "Received",
    "RunningBroker",
    "Subscriber",
    "TlsMaterial",
    "broker",
    "broker_auth",
    "broker_tls",
    "make_tls_material",
    "matching",
    "tls_material",
]

USERNAME = "edged"
PASSWORD = "s3cret-Pa55word"  # a recognisable value, so tests can assert it is never logged


# --- TLS material ----------------------------------------------------------------


@dataclass(frozen=True)
class TlsMaterial:
    """A CA, a server certificate it signed (SAN localhost + 127.0.0.1), and an unrelated CA."""

    ca: Path
    cert: Path
    key: Path
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, crt = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", f"/CN=edged test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", key.name, "-out", crt.name,
        cwd=directory,
    )  # fmt: skip
    return crt, key


def make_tls_material(directory: Path) -> TlsMaterial:
    """Create test TLS material with the ``openssl`` CLI in ``directory``."""
    ca, ca_key = _make_ca(directory, "ca")
    other_ca, _ = _make_ca(directory, "other-ca")
    (directory / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", ca.name, "-CAkey", ca_key.name,
        "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.crt",
        cwd=directory,
    )  # fmt: skip
    (directory / "server.key").chmod(0o600)
    return TlsMaterial(ca, directory / "server.crt", directory / "server.key", other_ca)


# --- subscriber ------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One message as a subscriber saw it."""

    topic: str
    payload: bytes
    retain: bool
    qos: int
    props: dict[str, Any]


def matching(
    topic: str, payload: bytes | None = None, *, retain: bool | None = None
) -> Callable[[Received], bool]:
    """Predicate for :meth:`Subscriber.wait_for`: topic filter, and payload/retain if given."""

    def predicate(m: Received) -> bool:
        return (
            paho.topic_matches_sub(topic, m.topic)
            and (payload is None or m.payload == payload)
            and (retain is None or m.retain == retain)
        )

    predicate.__doc__ = f"topic={topic!r} payload={payload!r} retain={retain!r}"
    return predicate


class Subscriber:
    """A paho MQTT 5 client that records everything matching ``topic_filter``.

    With ``client_id`` it keeps a persistent session (clean start off, one
    hour expiry), so with a persistent broker it misses nothing across
    restarts. It resubscribes on every reconnect. Thread-safe.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic_filter: str = "#",
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
        client_id: str | None = None,
        qos: int = 1,
    ) -> None:
        self.host, self.port, self.topic_filter, self.qos = host, port, topic_filter, qos
        self._persistent = client_id is not None
        self._cond = threading.Condition()
        self._received: list[Received] = []
        self._subscribed = threading.Event()
        self._started = False
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or "",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.reconnect_delay_set(1, 1)
        if username:
            self._client.username_pw_set(username, password)
        if ca_file is not None:
            self._client.tls_set(ca_certs=str(ca_file))
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self, timeout: float = 5.0) -> Self:
        """Connect, subscribe and wait for the SUBACK; a no-op when already started."""
        if self._started:
            return self
        self._started = True
        props = None
        if self._persistent:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
        self._client.connect(
            self.host, self.port, keepalive=5, clean_start=not self._persistent, properties=props
        )
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise AssertionError(f"subscriber: no SUBACK for {self.topic_filter!r} in {timeout} s")
        return self

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()
        self._client._reset_sockets(sockpair_only=True)  # see MqttClient.stop

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_connect(
        self, client: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic_filter, qos=self.qos)

    def _on_subscribe(
        self, _c: Any, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any
    ) -> None:
        if not any(r.is_failure for r in reasons):
            self._subscribed.set()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        props: dict[str, Any] = {}
        if msg.properties is not None:
            props = msg.properties.json()  # type: ignore[no-untyped-call]
        item = Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos, props)
        with self._cond:
            self._received.append(item)
            self._cond.notify_all()

    def messages(self, topic_filter: str = "#") -> list[Received]:
        """Everything received so far whose topic matches ``topic_filter``."""
        with self._cond:
            return [m for m in self._received if paho.topic_matches_sub(topic_filter, m.topic)]

    def wait_for(self, predicate: Callable[[Received], bool], timeout: float = 5.0) -> Received:
        """The first message (already received or arriving within ``timeout``) matching."""
        with self._cond:
            found: list[Received] = []
            checked = 0

            def ready() -> bool:
                # Only the messages that arrived since the last look: rescanning
                # everything on every arrival is quadratic, and with thousands of
                # messages it held the lock long enough to starve on_message.
                nonlocal checked
                new, checked = self._received[checked:], len(self._received)
                found[:] = [m for m in new if predicate(m)][:1]
                return bool(found)

            if self._cond.wait_for(ready, timeout):
                return found[0]
            got = "\n  ".join(
                f"{m.topic} {m.payload[:200]!r} retain={m.retain}" for m in self._received
            )
        what = predicate.__doc__ or getattr(predicate, "__name__", repr(predicate))
        raise AssertionError(
            f"no message matching {what} within {timeout} s; received {len(self._received)}:"
            f"\n  {got or '(nothing)'}"
        )


# --- brokers ---------------------------------------------------------------------------


@dataclass
class RunningBroker:
    """A started :class:`LocalBroker` plus what a client needs to reach it."""

    broker: LocalBroker
    username: str = ""
    password: str = ""
    ca_file: Path | None = None
    subscribers: list[Subscriber] = field(default_factory=list)

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.port

    def settings(self, **overrides: Any) -> MqttSettings:
        """MqttSettings for this broker, with fast reconnects and a 5 s keep-alive."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "tls": self.ca_file is not None,
            "ca_file": self.ca_file,
            "keepalive_s": 5,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.5,
        }
        values.update(overrides)
        return MqttSettings(**values)

    def subscriber(self, topic_filter: str = "#", **kwargs: Any) -> Subscriber:
        """A started subscriber with this broker's credentials, closed at teardown."""
        kwargs.setdefault("username", self.username or None)
        kwargs.setdefault("password", self.password or None)
        kwargs.setdefault("ca_file", self.ca_file)
        sub = Subscriber(self.host, self.port, topic_filter, **kwargs).start()
        self.subscribers.append(sub)
        return sub

    def close(self) -> None:
        for sub in self.subscribers:
            sub.close()
        self.broker.close()


def _running(broker: LocalBroker, **kwargs: Any) -> Iterator[RunningBroker]:
    running = RunningBroker(broker, **kwargs)
    try:
        broker.start()
        yield running
    finally:
        running.close()


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    """Self-signed CA, server certificate for localhost/127.0.0.1, and an unrelated CA."""
    return make_tls_material(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RunningBroker]:
    """An anonymous mosquitto on a free port."""
    yield from _running(LocalBroker(workdir=tmp_path / "broker"))


@pytest.fixture
def broker_auth(tmp_path: Path) -> Iterator[RunningBroker]:
    """A mosquitto that requires ``username``/``password`` (anonymous refused)."""
    b = LocalBroker(workdir=tmp_path / "broker", users={USERNAME: PASSWORD})
    yield from _running(b, username=USERNAME, password=PASSWORD)


@pytest.fixture
def broker_tls(tmp_path: Path, tls_material: TlsMaterial) -> Iterator[RunningBroker]:
    """A TLS-only mosquitto with a password; clients verify it with ``ca_file``."""
    b = LocalBroker(
        workdir=tmp_path / "broker",
        users={USERNAME: PASSWORD},
        tls_cert=tls_material.cert,
        tls_key=tls_material.key,
        tls_ca=tls_material.ca,
    )
    yield from _running(b, username=USERNAME, password=PASSWORD, ca_file=tls_material.ca)
