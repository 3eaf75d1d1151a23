"""Every numeric key has a finite, documented range; its edges are accepted, beyond them refused.

A value that passes validation must also run (issues 13.6 and 17.6: ``max_fps =
5e-324`` passed ``check`` and killed a pipeline thread), so the ranges are the
contract: the reference (docs/configuration.md) prints them, this file checks
them at each edge, and ``tests/test_run_properties.py`` runs configs drawn
near them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from edged.__main__ import main
from edged.config.reference import bounds, reference_markdown
from edged.config.settings import load_settings
from edged.errors import EX_CONFIG, ConfigError
from tests.helpers.daemon import write_config
from tests.helpers.settings_keys import NumericKey, numeric_keys


def minimal() -> dict[str, Any]:
    """A config with one source and one pipeline, so that their keys can be set."""
    return {
        "device_id": "dev",
        "sources": [{"name": "cam", "kind": "images", "uri": "/srv/img"}],
        "pipelines": [
            {"name": "door", "source": "cam", "task": "detection", "model": "some-model"}
        ],
    }


KEYS = list(numeric_keys())
IDS = [k.path for k in KEYS]


def problems_of(cfg: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        load_settings(None, cfg)
    except ConfigError as exc:
        return exc.problems
    return []


def test_every_numeric_key_has_a_finite_range() -> None:
    """No int or float key is unbounded on either side (a new key must declare its range)."""
    assert len(KEYS) > 30
    assert not [k.path for k in KEYS if None in bounds(k.info)]
    for key in KEYS:
        low, high = key.range
        assert math.isfinite(low)
        assert math.isfinite(high)
        assert low <= high


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_range_edges_are_accepted_and_beyond_refused(key: NumericKey) -> None:
    """Both ends of the documented range load; just beyond them, and inf/nan, are refused by key."""
    low, high = key.range
    if key.integer:
        ok: list[Any] = [int(low), int(high)]
        bad: list[Any] = [int(low) - 1, int(high) + 1]
    else:
        ok = [low, high]
        bad = [low - max(abs(low) * 1e-6, 1e-9), high * (1 + 1e-6) + 1e-9]
        bad += [math.inf, -math.inf, math.nan, 1e308, -1e308] + ([5e-324] if low > 0 else [])
    for value in ok:
        assert problems_of(key.set(minimal(), value)) == [], (key.path, value)
    for value in bad:
        found = problems_of(key.set(minimal(), value))
        assert [k for k, _ in found] == [key.path], (key.path, value, found)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("outbox", "max_mb", math.inf),
        ("outbox", "max_mb", 1e308),
        ("offload", "mb_per_day", math.inf),
        ("offload", "mb_per_day", 1e308),
        ("outbox", "max_age_hours", math.inf),
        ("outbox", "max_age_hours", 1e308),
        ("offload", "connect_timeout_s", math.inf),
        ("offload", "connect_timeout_s", 1e308),
        ("pipelines", "hop_s", 5e-324),
        ("pipelines", "max_fps", 5e-324),
        ("sources", "fps", 5e-324),
    ],
)
def test_check_refuses_values_that_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, key: str, value: float
) -> None:
    """`edged check` exits 78 naming the key for the values of issues 13.6 / 17.6 (no traceback)."""
    cfg = minimal()
    cfg["sources"][0]["uri"] = tmp_path
    if section in ("sources", "pipelines"):
        cfg[section][0][key] = value
        path = f"{section}[0].{key}"
    else:
        cfg[section] = {key: value}
        path = f"{section}.{key}"
    config = write_config(tmp_path / "edged.toml", cfg)
    assert main(["check", "--offline", "--config", str(config)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert f"{path}: " in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "key",
    ["state_dir", "outbox.path", "models.dir", "mqtt.ca_file", "offload.token_file", "mqtt.host"],
)
def test_nul_in_a_path_is_refused_with_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    """A NUL byte (TOML escape \\u0000) in a path or host makes `check` exit 78 naming the key."""
    section, _, name = key.rpartition(".")
    line = f'{name} = "{tmp_path}/a\\u0000b"'
    config = tmp_path / "edged.toml"
    config.write_text('device_id = "dev"\n' + (f"[{section}]\n" if section else "") + line + "\n")
    assert main(["check", "--offline", "--config", str(config)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert f"{key}: " in err, err
    assert "control character" in err


@pytest.mark.parametrize("model", ["a\u0000b", "a\nb"])
def test_control_characters_in_names_are_refused(model: str) -> None:
    """A model name or path with a control character is refused at load time."""
    cfg = minimal()
    cfg["pipelines"][0]["model"] = model
    assert [k for k, _ in problems_of(cfg)] == ["pipelines[0].model"]


def test_bounds_appear_in_the_reference() -> None:
    """The configuration reference prints each key's range."""
    text = reference_markdown()
    assert "| `max_fps` | float | `5.0` | 0.01 … 240 |" in text
    assert "| `connect_timeout_s` | float | `3.0` | 0.1 … 86400 |" in text
