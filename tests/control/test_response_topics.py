"""No response topic can wedge the daemon's MQTT session (issue 13, item 2, and its fuzz).

A command whose Response Topic lies under the device's ``cmd/`` tree but has
more levels than mosquitto accepts (201) used to get its QoS 1 reply
published there: mosquitto dropped the daemon's connection and paho re-sent
the reply after every reconnect, so the device was cut off for good. Now the
topic is refused up front, with a reply on the default reply topic naming
the problem.

The fuzz sends generated response topics (valid ones, very deep, very long,
wildcards, empty levels, other devices' trees, broker topics, and those the
broker itself refuses: NUL, control characters, non-characters, invalid
UTF-8) to a real ``edged run`` against a real mosquitto, then checks that the
session never dropped, commands and results still flow, and nothing crashed.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from dataclasses import dataclass

import pytest

from tests.control.conftest import RunningApp
from tests.control.test_fuzz import FuzzTarget, assert_still_serving, target  # noqa: F401
from tests.helpers.commands import BASE, CommandClient

pytestmark = pytest.mark.broker

DEFAULT_REPLY = f"{BASE}/cmd/ping/reply"
FAST_CASES = 2_000
SLOW_CASES = 10_000
#: Requests in flight at once (the daemon's command queue holds 32).
BATCH = 20


def test_a_response_topic_deeper_than_the_broker_allows_is_refused(running: RunningApp) -> None:
    """255 levels under cmd/: refused on the default reply topic, naming the levels; session kept."""
    deep = f"{BASE}/cmd/ping/reply/" + "/".join(["x"] * 250)
    with running.client() as client:
        reply = client.wait(client.send("ping", response_topic=deep, correlation=b"deep"))
        assert reply.topic == DEFAULT_REPLY
        assert reply.doc["ok"] is False
        assert reply.doc["error"].startswith("response_topic: ")
        assert "has 255 levels; at most 32 are allowed" in reply.doc["error"]
        # The session never dropped: the next request is answered at once.
        assert client.request("ping", timeout=5)["ok"] is True
    assert running.app.mqtt.disconnects == 0
    assert running.app.mqtt.connected


def test_a_response_topic_over_the_byte_limit_is_refused(running: RunningApp) -> None:
    """A 60 kB response topic (levels of 120 bytes) is refused naming its length."""
    long = f"{BASE}/cmd/ping/reply/" + "/".join(["x" * 120] * 500)
    with running.client() as client:
        reply = client.wait(client.send("ping", response_topic=long, correlation=b"long"))
    assert reply.topic == DEFAULT_REPLY
    assert "bytes long; at most 1024 are allowed" in reply.doc["error"]


# --- fuzz ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One generated response topic, as raw bytes, and what the daemon must do with it."""

    topic: bytes
    #: "allowed": reply there; "refused": error on the default topic; "broker": the
    #: broker drops the sender (bad UTF-8 / control characters): never reaches the daemon.
    expect: str


_ALPHABET = "abcxyz019-_.é🐈Kü"


def _level(rng: random.Random, size: int | None = None) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(size or rng.randint(1, 8)))


def generate(rng: random.Random) -> Case:
    """A random response topic of one of the kinds in the module docstring."""
    under = f"{BASE}/cmd/ping/"
    kind = rng.randrange(12)
    if kind <= 2:
        rest = "/".join(_level(rng) for _ in range(rng.randint(1, 5)))
        return Case(f"{under}{rest}".encode(), "allowed")
    if kind == 3:  # very deep: past our limit of 32, and often past mosquitto's 201
        rest = "/".join(_level(rng, 1) for _ in range(rng.randint(31, 600)))
        return Case(f"{under}{rest}".encode(), "refused")
    if kind == 4:  # very long: past 1024 bytes, up to the protocol's 65,535
        size = rng.randint(1025, 65_000) - len(under)
        rest = "/".join("y" * 100 for _ in range(size // 101 + 1))
        return Case(f"{under}{rest}".encode()[:65_000].rstrip(b"/"), "refused")
    if kind == 5:  # a level over 128 bytes
        return Case(f"{under}reply/{'z' * rng.randint(129, 900)}".encode(), "refused")
    if kind == 6:  # wildcards
        w = rng.choice(["+", "#", "a+", "#b", "+/#"])
        return Case(f"{under}reply/{w}".encode(), "refused")
    if kind == 7:  # empty levels
        return Case(
            rng.choice([f"{under}reply/", f"{under}/x", f"{under}a//b"]).encode(), "refused"
        )
    if kind == 8:  # other trees: other devices, own results and state, broker topics, shallow
        return Case(
            rng.choice(
                [
                    f"edged/otherdev/cmd/ping/reply/{_level(rng)}",
                    f"{BASE}/state",
                    f"{BASE}/door/detections",
                    f"{BASE}/cmd/ping",
                    f"$SYS/broker/{_level(rng)}",
                    "home/front-door/lock/set",
                    _level(rng),
                ]
            ).encode(),
            "refused",
        )
    if kind == 9:  # characters the broker refuses in any UTF-8 string
        bad = rng.choice(["\x00", "\x01", "\x1f", "\x7f", "\x85", "\ufffe", "\uffff"])
        return Case(f"{under}reply/a{bad}b".encode(), "broker")
    if kind == 10:  # invalid UTF-8: lone continuation bytes, truncated sequences, surrogates
        bad = rng.choice([b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
        return Case(f"{under}reply/".encode() + bad, "broker")
    # Near the limits: exactly 32 levels is fine, 33 is not.
    levels = rng.choice([32, 33])
    rest = "/".join("v" for _ in range(levels - 4))  # BASE/cmd/ping = 4 levels
    return Case(f"{under}{rest}".encode(), "allowed" if levels == 32 else "refused")


def _utf8(text: bytes) -> bytes:
    return struct.pack("!H", len(text)) + text


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def raw_publish(host: str, port: int, topic: str, response_topic: bytes) -> None:
    """An MQTT 5 QoS 0 PUBLISH with raw Response Topic bytes (paho would refuse to encode them).

    mosquitto drops this client for a malformed string; what matters is that
    the daemon never sees the request, or refuses it.
    """
    props = b"\x08" + _utf8(response_topic) + b"\x09" + _utf8(b"raw")
    connect_body = _utf8(b"MQTT") + b"\x05\x02\x00\x0a" + b"\x00" + _utf8(b"")
    publish_body = _utf8(topic.encode()) + _varint(len(props)) + props + b"{}"
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"\x10" + _varint(len(connect_body)) + connect_body)
        assert s.recv(4)[:1] == b"\x20", "no CONNACK"
        s.sendall(b"\x30" + _varint(len(publish_body)) + publish_body)
        s.settimeout(2)
        try:
            while s.recv(1024):  # until the broker closes it
                pass
        except (TimeoutError, ConnectionResetError):
            pass


def fuzz_response_topics(fuzzed: FuzzTarget, cases: int, seed: int) -> None:
    """Send ``cases`` generated response topics; every one that reaches the daemon is answered."""
    rng = random.Random(seed)
    client: CommandClient = fuzzed.client
    started = time.monotonic()
    counts = {"allowed": 0, "refused": 0, "broker": 0}
    while sum(counts.values()) < cases:
        batch = [generate(rng) for _ in range(BATCH)]
        sent: list[tuple[Case, bytes]] = []
        for case in batch:
            counts[case.expect] += 1
            if case.expect == "broker":
                raw_publish(fuzzed.broker.host, fuzzed.broker.port, f"{BASE}/cmd/ping", case.topic)
                continue
            corr = f"rt-{fuzzed.sent}".encode()
            fuzzed.sent += 1
            client.send("ping", response_topic=case.topic.decode(), correlation=corr)
            sent.append((case, corr))
        for case, corr in sent:
            reply = client.wait(corr, timeout=30)
            if case.expect == "allowed":
                assert reply.topic == case.topic.decode(), case
                assert reply.doc["ok"] is True, reply.doc
            else:
                assert reply.topic == DEFAULT_REPLY, case
                assert reply.doc["ok"] is False
                assert reply.doc["error"].startswith("response_topic: "), reply.doc
    took = time.monotonic() - started
    print(f"\nresponse-topic fuzz: {counts} in {took:.1f} s")
    assert min(counts.values()) > 0
    # The daemon's session never dropped, nothing was dropped as unpublishable.
    log = fuzzed.daemon.output
    assert "mqtt.disconnected" not in log, log[-3000:]
    assert "mqtt.unpublishable" not in log
    assert "command.failed" not in log
    assert_still_serving(fuzzed)  # ping, results flow, SIGTERM exits 0, no traceback


def test_generated_response_topics_never_wedge_the_session(target: FuzzTarget) -> None:  # noqa: F811
    """2,000 generated response topics: each answered where the rule says; the session holds."""
    fuzz_response_topics(target, FAST_CASES, seed=13)


@pytest.mark.slow
def test_many_generated_response_topics_never_wedge_the_session(target: FuzzTarget) -> None:  # noqa: F811
    """10,000 generated response topics, another seed: same property."""
    fuzz_response_topics(target, SLOW_CASES, seed=1313)
