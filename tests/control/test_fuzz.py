"""Property-based fuzzing of every command topic against a running daemon (``edged run``, mosquitto).

Random command names (the real ones and unicode noise), random payloads
(objects with the real field names holding values of random types, arbitrary
JSON, not-quite-JSON, non-UTF-8 binary, oversize) and random response topics
(allowed, refused, none). Property: the daemon answers *every* request
exactly once, where the protocol says, with a JSON object that is either a
success of that very command or an error naming its field; and afterwards it
still works and stops cleanly.

Each hypothesis example is a batch of :data:`BATCH` requests sent at once and
told apart by MQTT 5 correlation data: the round trip through the broker is
then paid once per batch instead of once per request (generating a request
costs a few ms here, a round trip as much again), and the daemon's queue sees
bursts. Case counts below are requests.

Generated strings leave out what the broker itself refuses in a topic
(control characters, surrogates, non-characters: mosquitto disconnects a
client that sends them), so every request reaches the daemon.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.control.commands import COMMANDS, MAX_PAYLOAD_BYTES
from edged.demo.broker import LocalBroker
from tests.control.conftest import photos_config, wait_until_serving
from tests.helpers.broker import RunningBroker, matching
from tests.helpers.commands import BASE, CommandClient
from tests.helpers.daemon import Daemon, write_config

pytestmark = pytest.mark.broker

#: Requests per hypothesis example, sent concurrently (below the daemon's queue of 32).
BATCH = 10
DEFAULT_CASES = 2_000
SLOW_CASES = 10_000

# Characters a topic level may carry through mosquitto: no separators or
# wildcards, no control characters (Cc), surrogates (Cs) or non-characters (Cn).
_TOPIC_CHARS = st.characters(blacklist_categories=("Cc", "Cs", "Cn"), blacklist_characters="/+#")
_LEVEL = st.text(_TOPIC_CHARS, min_size=1, max_size=12)

_NAMES = st.one_of(
    st.sampled_from(sorted(COMMANDS)),
    # 30 characters of at most 4 bytes stay within the 128-byte segment limit.
    st.text(_TOPIC_CHARS, min_size=1, max_size=30),
)

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
# The real field names (and one unknown) holding the real names, numbers in
# and out of range, or anything else.
_FIELD_NAMES = st.sampled_from(
    ["pipeline", "source", "threshold", "quality", "max_side", "reason", "id", "extra"]
)
_FIELD_VALUES = st.one_of(
    st.sampled_from(["door", "cam0", "", "DOOR"]),
    st.floats(-0.5, 1.5),
    st.integers(-10, 10_000),
    _SCALARS,
    st.lists(_SCALARS, max_size=3),
)
_PLAUSIBLE = st.dictionaries(_FIELD_NAMES, _FIELD_VALUES, max_size=4)


def _dumps(value: Any) -> bytes:
    # allow_nan (the default) writes NaN/Infinity, which are not JSON: good noise.
    return json.dumps(value).encode()


_PAYLOADS = st.one_of(
    _PLAUSIBLE.map(_dumps),
    _JSON.map(_dumps),
    st.binary(max_size=200),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(MAX_PAYLOAD_BYTES + 1, MAX_PAYLOAD_BYTES + 2048).map(
        lambda n: b'{"pipeline":"door"' + b" " * (n - 19) + b"}"
    ),
)

_REFUSED_TOPICS = st.one_of(
    st.sampled_from([f"{BASE}/state", f"{BASE}/cmd/ping", f"{BASE}/door/detections", "x"]),
    st.lists(_LEVEL, min_size=1, max_size=4).map("/".join),
)


@dataclass(frozen=True)
class Case:
    """One request: name, payload, and its response topic (None: none) and whether it is allowed."""

    command: str
    payload: bytes
    response_topic: str | None
    allowed: bool


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A random request."""
    command = draw(_NAMES)
    payload = draw(_PAYLOADS)
    kind = draw(st.sampled_from(["allowed", "none", "refused"]))
    if kind == "none":
        return Case(command, payload, None, allowed=True)
    if kind == "allowed":
        rest = draw(st.lists(_LEVEL, min_size=1, max_size=3))
        return Case(command, payload, f"{BASE}/cmd/{command}/{'/'.join(rest)}", allowed=True)
    return Case(command, payload, draw(_REFUSED_TOPICS), allowed=False)


def check_reply(client: CommandClient, case: Case, correlation: bytes) -> None:
    """The property: one well-formed answer, on the right topic, for every request."""
    reply = client.wait(correlation, timeout=30)
    default = f"{BASE}/cmd/{case.command}/reply"
    if case.allowed:
        assert reply.topic == (case.response_topic or default)
    else:
        # A random "refused" topic may happen to obey the rule; then it is used.
        under = (case.response_topic or "").startswith(f"{BASE}/cmd/")
        assert reply.topic == default or (under and reply.topic == case.response_topic)
    doc = reply.doc
    assert isinstance(doc["ok"], bool)
    if doc["ok"]:
        assert case.command in COMMANDS
        assert doc["command"] == case.command
        assert len(case.payload) <= MAX_PAYLOAD_BYTES
    else:
        assert isinstance(doc["error"], str)
        field, sep, problem = doc["error"].partition(": ")
        assert sep, doc["error"]
        assert field
        assert problem
        if case.command not in COMMANDS:
            assert field == "command" if case.allowed else field in ("command", "response_topic")


@dataclass
class FuzzTarget:
    """The daemon under fuzz (a real ``edged run`` process) and a client talking to it."""

    daemon: Daemon
    client: CommandClient
    broker: RunningBroker
    sent: int = 0


@pytest.fixture
def target(tmp_path: Path, models_dir: Path, media_dir: Path) -> Iterator[FuzzTarget]:
    """A daemon process on the photos, and a command client.

    A process of its own, not an in-process App: the daemon's threads then do
    not share a GIL with hypothesis and the client, and at the end it must
    still stop cleanly on SIGTERM.
    """
    running = RunningBroker(LocalBroker(workdir=tmp_path / "broker"))
    running.broker.start()
    cfg = photos_config(tmp_path, models_dir, media_dir, running)
    config = write_config(tmp_path / "edged.toml", cfg)
    try:
        with Daemon(config) as daemon, CommandClient(running.host, running.port) as client:
            wait_until_serving(client, timeout=30)
            yield FuzzTarget(daemon, client, running)
    finally:
        running.close()


def run_batch(target: FuzzTarget, batch: list[Case]) -> None:
    """Send every case of ``batch`` at once, then check each reply."""
    sent = []
    for case in batch:
        correlation = f"fuzz-{target.sent}".encode()
        target.sent += 1
        target.client.send(
            case.command, case.payload, response_topic=case.response_topic, correlation=correlation
        )
        sent.append((case, correlation))
    for case, correlation in sent:
        check_reply(target.client, case, correlation)


def assert_still_serving(target: FuzzTarget) -> None:
    """Commands work, the pipeline (re-enabled) publishes, SIGTERM exits 0, nothing crashed."""
    client = target.client
    sub = target.broker.subscriber(f"{BASE}/door/detections")
    assert client.request("ping")["ok"] is True
    assert client.request("set_threshold", {"pipeline": "door", "threshold": 0.5})["ok"] is True
    assert client.request("enable", {"pipeline": "door"})["ok"] is True
    sub.wait_for(matching(f"{BASE}/door/detections"), timeout=10)
    rc, took = target.daemon.stop()
    log = target.daemon.output
    assert rc == 0, log[-3000:]
    assert took < 10
    assert "Traceback" not in log
    assert "command.crashed" not in log


def fuzz(target: FuzzTarget, requests: int) -> None:
    """Send ``requests`` random requests in batches, checking every reply; then check health."""

    @settings(
        max_examples=requests // BATCH,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batch=st.lists(cases(), min_size=BATCH, max_size=BATCH))
    def one_batch(batch: list[Case]) -> None:
        run_batch(target, batch)

    started = time.monotonic()
    one_batch()
    took = time.monotonic() - started
    print(f"\nfuzz: {target.sent} requests in {took:.1f} s = {target.sent / took:.0f} requests/s")
    assert target.sent >= requests
    assert_still_serving(target)


def test_every_command_topic_survives_fuzzing(target: FuzzTarget) -> None:
    """2,000 random requests each get one well-formed reply; the daemon then still serves."""
    fuzz(target, DEFAULT_CASES)


@pytest.mark.slow
def test_every_command_topic_survives_long_fuzzing(target: FuzzTarget) -> None:
    """10,000 random requests each get one well-formed reply; the daemon then still serves."""
    fuzz(target, SLOW_CASES)
