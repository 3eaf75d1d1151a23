"""The command allow-list (``[commands] allow``) of a real daemon App on a real mosquitto."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from structlog.testing import capture_logs

from edged.config.settings import READ_ONLY_COMMANDS, CommandName, load_settings
from edged.control.commands import COMMANDS
from edged.errors import ConfigError
from tests.control.conftest import RunningApp, photos_config, start_app, wait_until_serving
from tests.helpers.broker import RunningBroker
from tests.helpers.commands import BASE, CommandClient

pytestmark = pytest.mark.broker

MUTATING = sorted(set(COMMANDS) - set(READ_ONLY_COMMANDS))
PAYLOADS: dict[str, dict[str, Any]] = {
    "enable": {"pipeline": "door"},
    "disable": {"pipeline": "door"},
    "set_enabled": {"pipeline": "door", "enabled": False},
    "set_threshold": {"pipeline": "door", "threshold": 0.9},
    "reload": {},
    "snapshot": {"source": "cam0"},
    "event_snapshot": {"event_id": "0190a1b2-c3d4"},
    "model_update": {"pipeline": "door", "model": "yolox-nano-coco"},
}


def allowing(cfg: dict[str, Any], allow: list[str] | None) -> dict[str, Any]:
    """``cfg`` with ``[commands] allow`` set, or without a [commands] section (None)."""
    cfg = dict(cfg)
    cfg.pop("commands", None)
    if allow is not None:
        cfg["commands"] = {"allow": allow}
    return cfg


@pytest.fixture
def default_app(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> Iterator[RunningApp]:
    """A started App whose configuration has no [commands] section (the default allow-list)."""
    path = tmp_path / "edged.toml"
    cfg = allowing(photos_config(tmp_path, models_dir, media_dir, broker), None)
    app, stop = start_app(cfg, path)
    try:
        with CommandClient(broker.host, broker.port) as client:
            wait_until_serving(client)
        yield RunningApp(app, path, broker)
    finally:
        stop()


def test_every_command_is_a_settings_name() -> None:
    """``[commands] allow`` accepts exactly the names of the commands there are."""
    assert set(get_args(CommandName)) == set(COMMANDS)


def test_by_default_only_read_only_commands_run(default_app: RunningApp) -> None:
    """No [commands] section: ping runs; enable, disable, set_threshold, reload and snapshot are
    answered 'not allowed' naming the key, with the request's id, and change nothing."""
    spy = default_app.broker.subscriber(f"{BASE}/cam0/snapshot")
    with default_app.client() as client:
        assert client.request("ping")["ok"] is True
        replies = {name: client.request(name, {**PAYLOADS[name], "id": name}) for name in MUTATING}
    for name, reply in replies.items():
        assert reply["ok"] is False
        assert reply["id"] == name
        assert reply["error"].startswith(f"command: {name!r} is not allowed on this device"), reply
        assert f'[commands] allow = ["ping", "{name}"]' in reply["error"]
    pipeline = default_app.app.graph.pipelines["door"]
    assert pipeline.enabled
    assert pipeline.threshold == 0.5
    time.sleep(0.3)
    assert spy.messages() == []
    assert default_app.app.control.router.counters.not_allowed == len(MUTATING)


def test_refusals_are_counted_and_logged_once_per_burst(default_app: RunningApp) -> None:
    """Twenty refused commands in a burst: one warning line, every one counted."""
    with capture_logs() as logs, default_app.client() as client:
        corrs = [client.send("reload") for _ in range(20)]
        for corr in corrs:
            client.wait(corr)
    lines = [e for e in logs if e["event"] == "command.not_allowed"]
    assert len(lines) == 1, lines
    assert lines[0]["log_level"] == "warning"
    assert lines[0]["command"] == "reload"
    assert default_app.app.control.router.counters.not_allowed == 20


def test_allowed_mutating_commands_are_logged_with_the_claimed_client_id(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """allow = ["ping", "disable"]: disable runs and is logged with the client_id User Property
    and the response topic; ping is not logged."""
    cfg = allowing(photos_config(tmp_path, models_dir, media_dir, broker), ["ping", "disable"])
    _app, stop = start_app(cfg, tmp_path / "edged.toml")
    try:
        with CommandClient(broker.host, broker.port) as client:
            wait_until_serving(client)
            with capture_logs() as logs:
                client.request("ping")
                corr = client.send(
                    "disable", {"pipeline": "door"}, user_properties={"client_id": "ops-laptop"}
                )
                reply = client.wait(corr).doc
    finally:
        stop()
    assert reply["ok"] is True
    accepted = [e for e in logs if e["event"] == "command.accepted"]
    assert len(accepted) == 1, accepted
    assert accepted[0]["command"] == "disable"
    assert accepted[0]["client_id"] == "ops-laptop"
    assert accepted[0]["response_topic"] == f"{BASE}/cmd/disable/reply/test"


def test_a_reload_applies_a_changed_allow_list(
    default_app: RunningApp, tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    """Adding "disable" to the allow-list and reloading (SIGHUP's path) lets disable run."""
    cfg = photos_config(tmp_path, models_dir, media_dir, default_app.broker)
    with default_app.client() as client:
        assert client.request("disable", {"pipeline": "door"})["ok"] is False
        default_app.rewrite(allowing(cfg, ["ping", "disable"]))
        outcome = default_app.app.request_reload().result(timeout=30)
        assert outcome.applied, outcome.problems
        assert client.request("disable", {"pipeline": "door"})["ok"] is True


def test_an_unknown_command_name_in_the_allow_list_is_a_config_error(tmp_path: Path) -> None:
    """allow = ["ping", "reboot"]: a ConfigError at commands.allow[1] listing the commands."""
    path = tmp_path / "edged.toml"
    path.write_text('[commands]\nallow = ["ping", "reboot"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    ((key, message),) = caught.value.problems
    assert key == "commands.allow[1]"
    assert "'set_threshold'" in message
