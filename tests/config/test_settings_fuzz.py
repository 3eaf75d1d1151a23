"""Fuzzed config files: ``load_settings`` returns Settings or raises ConfigError, nothing else.

Issue 13's fuzz acceptance, in-process half: 1,000 generated files
(random bytes, invalid UTF-8, deep nesting, huge numbers, inf/nan, NUL, wrong
types, unknown keys, valid-but-different configs). A raw exception here would
be a traceback from ``edged check`` and a dead main loop on reload. The same
files go to a running daemon in ``tests/faults/test_reload_fuzz.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from edged.config.settings import Settings, load_settings
from edged.errors import ConfigError
from tests.helpers.config_fuzz import ConfigFile, config_files

CASES = 1_000

GOOD = {
    "device_id": "testdev",
    "state_dir": "/var/lib/edged",
    "stats_interval_s": 2,
    "mqtt": {"host": "127.0.0.1", "port": 1883, "homeassistant": False},
    "sources": [{"name": "cam0", "kind": "images", "uri": "/srv/photos", "fps": 10, "loop": True}],
    "pipelines": [
        {
            "name": "door",
            "source": "cam0",
            "task": "detection",
            "model": "ssd-mobilenet-v1-coco-int8",
            "threshold": 0.5,
            "max_fps": 10,
        }
    ],
}


def test_good_config_is_valid() -> None:
    """The config the fuzz starts from loads (else every case would be trivially refused)."""
    assert isinstance(load_settings(None, GOOD), Settings)


def test_fuzzed_files_load_or_raise_config_error() -> None:
    """1,000 generated files: each is Settings or a ConfigError with problems, never another error."""
    outcomes = {"valid": 0, "refused": 0}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edged.toml"

        @settings(
            max_examples=CASES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(config_files(GOOD, valid_percent=10))
        def one(case: ConfigFile) -> None:
            case.write(path)
            try:
                loaded = load_settings(path)
            except ConfigError as exc:
                problems = exc.problems
            else:
                assert isinstance(loaded, Settings)
                outcomes["valid"] += 1
                return
            assert problems, case.how
            assert all(k and m for k, m in problems), (case.how, problems)
            outcomes["refused"] += 1

        one()
    assert sum(outcomes.values()) >= CASES
    assert outcomes["valid"] > 0
    assert outcomes["refused"] > CASES // 2
