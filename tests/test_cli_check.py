"""``edged check`` and ``edged run`` refuse bad input with exit 78, naming each key path."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edged.__main__ import main
from tests.helpers.bad_configs import KINDS, make_bad
from tests.helpers.broker import RunningBroker
from tests.helpers.daemon import base_config, write_config

EX_CONFIG = 78


def edged(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def good_config(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker | None
) -> dict[str, Any]:
    cfg = base_config(tmp_path, models_dir, broker)
    cfg["sources"] = [
        {"name": "cam0", "kind": "file", "uri": media_dir / "person_walking_0-30s.mp4"}
    ]
    cfg["pipelines"] = [
        {
            "name": "door",
            "source": "cam0",
            "task": "detection",
            "model": "ssd-mobilenet-v1-coco-int8",
        }
    ]
    return cfg


@pytest.mark.broker
def test_good_config_passes(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """A valid config with installed models and a reachable broker checks OK."""
    result = edged(
        "check",
        "--config",
        str(
            write_config(tmp_path / "c.toml", good_config(tmp_path, models_dir, media_dir, broker))
        ),
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_every_problem_is_listed(tmp_path: Path, models_dir: Path, media_dir: Path) -> None:
    """Missing model, bad sha256, decoder misfit and unreachable broker are each listed."""
    private = tmp_path / "models"
    shutil.copytree(models_dir, private)
    # sha256 mismatch: a corrupted copy of the YOLOX model.
    data = bytearray((private / "yolox_nano.onnx").read_bytes())
    data[1000] ^= 0xFF
    (private / "yolox_nano.onnx").write_bytes(bytes(data))
    # outputs that do not fit the decoder: the SSD file run through the YOLOX decoder.
    cfg = base_config(tmp_path, private, None, host="no-such-broker.invalid", port=1883)
    cfg["sources"] = [
        {"name": "cam0", "kind": "file", "uri": media_dir / "person_walking_0-30s.mp4"}
    ]
    cfg["pipelines"] = [
        {"name": "a", "source": "cam0", "task": "detection", "model": "no-such-model"},
        {"name": "b", "source": "cam0", "task": "detection", "model": "yolox-nano-coco"},
        {
            "name": "c",
            "source": "cam0",
            "task": "detection",
            "model": str(private / "coco_ssd_mobilenet_v1_1.0_quant.tflite"),
            "decoder": "yolox",
        },
    ]
    result = edged("check", "--config", str(write_config(tmp_path / "c.toml", cfg)))
    assert result.returncode == EX_CONFIG
    err = result.stderr
    assert "pipelines[0].model: model 'no-such-model' is not in the catalog" in err
    assert "pipelines[1].model" in err
    assert "sha256" in err
    assert "pipelines[2].model" in err
    assert "mqtt.host" in err
    assert "no-such-broker.invalid" in err


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        (
            {
                "pipelines": [
                    {
                        "name": "door",
                        "source": "cam0",
                        "task": "detection",
                        "model": "x",
                        "colour": 1,
                    }
                ]
            },
            "pipelines[0].colour",
        ),
        ({"mqtt": {"port": "eighty"}}, "mqtt.port"),
    ],
)
def test_schema_errors_exit_78(
    tmp_path: Path, models_dir: Path, media_dir: Path, patch: dict[str, Any], key: str
) -> None:
    """An unknown key or a wrong type is reported with its key path and exit 78."""
    cfg = good_config(tmp_path, models_dir, media_dir, None)
    cfg.update(patch)
    result = edged("check", "--config", str(write_config(tmp_path / "c.toml", cfg)))
    assert result.returncode == EX_CONFIG
    assert key in result.stderr


def test_run_refuses_before_opening_sources(
    tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    """``edged run`` exits 78 on the same problems, and no source was started."""
    cfg = good_config(tmp_path, models_dir, media_dir, None)
    cfg["pipelines"][0]["model"] = "no-such-model"
    result = edged("run", "--config", str(write_config(tmp_path / "c.toml", cfg)))
    assert result.returncode == EX_CONFIG
    assert "no-such-model" in result.stdout + result.stderr
    assert (
        "source"
        not in (result.stdout + result.stderr)
        .replace("sources", "")
        .lower()
        .split("invalid_config")[0]
    )
    assert "capture" not in result.stdout + result.stderr


def test_missing_config_file_exits_78(tmp_path: Path) -> None:
    """A config path that does not exist is a configuration error."""
    result = edged("check", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == EX_CONFIG
    assert "not found" in result.stderr


def test_world_readable_secret_is_a_warning(
    tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    """A password file every user can read is named in a warning; the check itself still passes."""
    cfg = good_config(tmp_path, models_dir, media_dir, None)
    secret = tmp_path / "mqtt_password"
    secret.write_text("hunter2\n")
    secret.chmod(0o644)
    cfg["mqtt"].update(username="edged", password_file=secret)
    result = edged("check", "--offline", "--config", str(write_config(tmp_path / "c.toml", cfg)))
    assert result.returncode == 0, result.stderr
    assert "warning: mqtt.password_file" in result.stderr
    assert "readable by every user" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


GOOD_TEXT = (
    '[[pipelines]]\nname = "door"\nsource = "cam0"\ntask = "detection"\nmodel = "m"\nmax_fps = 5\n'
)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_check_exits_78_on_every_malformed_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """Latin-1 bytes, deep nesting, a directory, a FIFO…: exit 78 with the reason, no traceback."""
    path = tmp_path / "edged.toml"
    expected = make_bad(kind, path, GOOD_TEXT)
    assert main(["check", "--offline", "--config", str(path)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", ["latin1", "deep_inline_table"])
def test_run_exits_78_on_a_malformed_file(tmp_path: Path, kind: str) -> None:
    """`edged run` refuses such a file the same way: exit 78, the reason logged, no traceback."""
    path = tmp_path / "edged.toml"
    expected = make_bad(kind, path, GOOD_TEXT)
    result = edged("run", "--config", str(path))
    assert result.returncode == EX_CONFIG
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop root")
def test_check_exits_78_on_an_unreadable_file(tmp_path: Path) -> None:
    """A config the service user may not read: exit 78, 'permission denied' (root reads anything,
    so the check runs as nobody)."""
    path = tmp_path / "edged.toml"
    path.write_text(GOOD_TEXT)
    path.chmod(0o600)
    tmp_path.chmod(0o755)
    result = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         sys.executable, "-m", "edged", "check", "--offline", "--config", str(path)],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == EX_CONFIG, result.stderr
    assert "permission denied" in result.stderr
    assert "Traceback" not in result.stderr
