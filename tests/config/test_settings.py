"""Configuration loading: TOML + env overrides + secrets, every problem with its key path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edged.config.settings import Settings, load_settings, read_secret
from edged.errors import ConfigError
from tests.helpers.bad_configs import KINDS, make_bad

GOOD = """
device_id = "pi-kitchen"
[mqtt]
host = "broker.lan"
port = 8883
[[sources]]
name = "cam0"
kind = "file"
uri = "/srv/door.mp4"
[[pipelines]]
name = "door"
source = "cam0"
task = "detection"
model = "ssd-mobilenet-v1-coco-int8"
labels = ["person"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edged.toml"
    path.write_text(text)
    return path


def test_design_example_keys_load(tmp_path: Path) -> None:
    """The key names of docs/configuration.md load into typed settings."""
    s = load_settings(write(tmp_path, GOOD))
    assert s.device_id == "pi-kitchen"
    assert (s.mqtt.host, s.mqtt.port) == ("broker.lan", 8883)
    assert s.pipelines[0].publish == "changes"
    assert s.source("cam0").uri == "/srv/door.mp4"


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EDGED_<SECTION>__<KEY> wins over the file and keeps the file's other keys."""
    monkeypatch.setenv("EDGED_MQTT__HOST", "10.0.0.9")
    s = load_settings(write(tmp_path, GOOD))
    assert s.mqtt.host == "10.0.0.9"
    assert s.mqtt.port == 8883


def test_every_problem_is_listed_with_its_key_path(tmp_path: Path) -> None:
    """An unknown key and a wrong type are both reported, each with its path."""
    bad = GOOD.replace('labels = ["person"]', 'labels = ["person"]\nthreshold = "high"\ncolour = 1')
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, bad))
    keys = [k for k, _ in info.value.problems]
    assert "pipelines[0].threshold" in keys
    assert "pipelines[0].colour" in keys


def test_unknown_top_level_section_is_an_error(tmp_path: Path) -> None:
    """A misspelt section is refused rather than ignored."""
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, GOOD + "\n[mqt]\nhost='x'\n"))
    assert info.value.problems[0][0] == "mqt"


def test_pipeline_must_name_a_defined_source(tmp_path: Path) -> None:
    """A pipeline reading an undefined source names the source and the known ones."""
    with pytest.raises(ConfigError, match="'cam9', which is not defined"):
        load_settings(write(tmp_path, GOOD.replace('source = "cam0"', 'source = "cam9"')))


@pytest.mark.parametrize("bad", ["a/b", "a+b", "a#b", "a\x00b", ""])
def test_topic_segments_are_validated(bad: str) -> None:
    """Names that become topic segments refuse wildcards, separators and NUL."""
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"device_id": bad})
    assert info.value.problems[0][0] == "device_id"


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    """A syntax error names the file and says it is not TOML."""
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "device_id = "))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is reported as such."""
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_secret_prefers_systemd_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$CREDENTIALS_DIRECTORY/<name> wins over the *_file key, newline stripped."""
    (tmp_path / "mqtt_password").write_text("from-systemd\n")
    other = tmp_path / "pw"
    other.write_text("from-file\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_secret(other, "mqtt_password") == "from-systemd"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert read_secret(other, "mqtt_password") == "from-file"


def test_unreadable_secret_is_a_config_error(tmp_path: Path) -> None:
    """A secret file that cannot be read is named, but its content never is."""
    with pytest.raises(ConfigError, match="cannot read secret file"):
        read_secret(tmp_path / "missing", "mqtt_password")


def test_schema_documents_units() -> None:
    """The JSON schema carries each field's description (the config reference)."""
    schema = Settings.model_json_schema()
    assert "seconds" in schema["$defs"]["MqttSettings"]["properties"]["keepalive_s"]["description"]


def test_defaults_need_no_file() -> None:
    """Settings without a file use the hostname as device id."""
    assert load_settings(None).device_id == os.uname().nodename


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_malformed_file_is_a_config_error(tmp_path: Path, kind: str) -> None:
    """Bad bytes, deep nesting, huge numbers, a directory, a FIFO… are ConfigErrors naming why."""
    path = tmp_path / "edged.toml"
    expected = make_bad(kind, path, GOOD + "max_fps = 5\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert expected in str(info.value)


def test_a_bad_environment_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An EDGED_* variable that is not the JSON a list needs is a ConfigError, not a crash."""
    monkeypatch.setenv("EDGED_SOURCES", "[not json")
    with pytest.raises(ConfigError, match="environment"):
        load_settings(None)


@pytest.mark.parametrize(
    ("task", "publish", "expected"),
    [
        ("audio", None, "nonempty"),
        ("audio", "changes", "changes"),
        ("detection", None, "changes"),
        ("detection", "all", "all"),
    ],
)
def test_publish_defaults_by_task_and_an_explicit_value_wins(
    task: str, publish: str | None, expected: str
) -> None:
    """``publish`` defaults to ``changes`` for vision, to ``nonempty`` for audio (every window
    reaching the threshold, as before audio honoured ``publish``); a value in the file wins."""
    pipeline = {"name": "p", "source": "s", "task": task, "model": "m"}
    if publish is not None:
        pipeline["publish"] = publish
    kind = "wav" if task == "audio" else "file"
    s = Settings.model_validate(
        {"sources": [{"name": "s", "kind": kind, "uri": "/x"}], "pipelines": [pipeline]}
    )
    assert s.pipelines[0].publish == expected
