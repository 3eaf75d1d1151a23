"""Command payload validation: what is accepted, and that every refusal names its field."""

from __future__ import annotations

import json

import pytest

from edged.control.commands import (
    COMMANDS,
    MAX_PAYLOAD_BYTES,
    Disable,
    Ping,
    SetThreshold,
    Snapshot,
    encode_reply,
    parse,
)
from edged.errors import CommandError


def refusal(command: str, payload: bytes) -> str:
    with pytest.raises(CommandError) as info:
        parse(command, payload)
    return str(info.value)


def test_the_command_set_is_closed() -> None:
    """Exactly nine commands exist; none takes a path, code or topic (an event id is checked
    against the daemon's own id alphabet before it names a stored file; model_update's url is
    pinned to a sha256 and off by default: tests/rollout/test_rollout_url.py)."""
    assert set(COMMANDS) == {
        "enable",
        "disable",
        "set_enabled",
        "set_threshold",
        "reload",
        "snapshot",
        "event_snapshot",
        "ping",
        "model_update",
    }
    fields = {f for model in COMMANDS.values() for f in model.model_fields}
    assert fields == {
        "id",
        "pipeline",
        "reason",
        "enabled",
        "threshold",
        "source",
        "quality",
        "max_side",
        "event_id",
        "crop",
        "model",
        "sha256",
        "url",
    }


def test_valid_payloads_parse_to_their_models() -> None:
    """Documented payloads parse, an int threshold is a number, and an empty payload is {}."""
    assert parse("set_threshold", b'{"pipeline":"door","threshold":1}') == SetThreshold(
        pipeline="door", threshold=1.0
    )
    assert parse("disable", b'{"pipeline":"door","reason":"dusk","id":"r1"}') == Disable(
        pipeline="door", reason="dusk", id="r1"
    )
    assert parse("snapshot", b'{"source":"cam0"}') == Snapshot(source="cam0")
    assert parse("ping", b"") == Ping()
    assert parse("ping", b"  \n") == Ping()


@pytest.mark.parametrize(
    ("command", "payload", "expected"),
    [
        ("shutdown", b"{}", "command: unknown command 'shutdown'; commands: disable, enable,"),
        ("ping", b"{", "payload: not valid JSON ("),
        ("ping", b"[1, 2]", "payload: must be a JSON object, not an array"),
        ("ping", b'"ping"', "payload: must be a JSON object, not a string"),
        ("ping", b"\xff\xfe{}", "payload: not UTF-8 text (byte 0: invalid start byte)"),
        ("ping", b"{}" + b" " * MAX_PAYLOAD_BYTES, "payload: 65538 bytes is more than the limit"),
        ("enable", b"{}", "pipeline: required"),
        ("enable", b'{"pipeline": 3}', "pipeline: Input should be a valid string, got 3"),
        ("enable", b'{"pipeline":"door","path":"/etc"}', "path: unknown field; 'enable' takes"),
        ("set_threshold", b'{"pipeline":"door","threshold":"0.5"}', "threshold: Input should be"),
        ("set_threshold", b'{"pipeline":"door","threshold":true}', "threshold: Input should be"),
        (
            "set_threshold",
            b'{"pipeline":"door","threshold":1.5}',
            "threshold: Input should be less",
        ),
        (
            "set_threshold",
            b'{"pipeline":"door","threshold":NaN}',
            "threshold: Input should be a fin",
        ),
        ("snapshot", b'{"source":"cam0","quality":80.0}', "quality: Input should be a valid int"),
        ("snapshot", b'{"source":"cam0","max_side":8}', "max_side: Input should be greater"),
        ("disable", b'{"pipeline":"door","reason":"a\\nb"}', "reason: String should match"),
        ("ping", b'{"id": ""}', "id: String should have at least 1 character"),
    ],
)
def test_refusals_name_the_field(command: str, payload: bytes, expected: str) -> None:
    """Every refusal starts with the field (or payload/command) that was wrong."""
    assert refusal(command, payload).startswith(expected)


def test_quoted_client_values_are_cut_short() -> None:
    """A long unknown command name is quoted back in at most ~64 characters."""
    message = refusal("x" * 5000, b"{}")
    assert len(message) < 200


def test_several_problems_are_all_listed() -> None:
    """Two wrong fields: the reply names both."""
    message = refusal("snapshot", b'{"source": 1, "quality": 5}')
    assert message.startswith("source: ")
    assert "; quality: " in message


def test_replies_are_compact_utf8_json() -> None:
    """Replies are compact JSON in UTF-8, non-ASCII text unescaped."""
    data = encode_reply({"ok": False, "error": "command: unknown command 'ünïcødé'"})
    assert data == '{"ok":false,"error":"command: unknown command \'ünïcødé\'"}'.encode()
    assert json.loads(data)["ok"] is False
