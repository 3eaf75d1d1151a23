"""``edged check`` and ``edged run`` refuse bad input with exit 78, naming each key path."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edged.__main__ import main
from edged.catalog.catalog import load_catalog
from edged.errors import EX_CONFIG, EX_FAILURE
from edged.label.quantize import write_local_entry
from tests.helpers.bad_configs import KINDS, make_bad
from tests.helpers.broker import RunningBroker
from tests.helpers.daemon import Daemon, base_config, ssd_pipeline, walking_source, write_config


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
    cfg["sources"] = [walking_source(media_dir)]
    cfg["pipelines"] = [ssd_pipeline()]
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
    cfg["sources"] = [walking_source(media_dir)]
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


# --- configurations that validated but could not run (issue 13 item 9) --------------


def wav_config(
    tmp_path: Path, models_dir: Path, media_dir: Path, task: str, model: str
) -> dict[str, Any]:
    cfg = base_config(tmp_path, models_dir, None)
    cfg["sources"] = [{"name": "mic", "kind": "wav", "uri": media_dir / "speech_jfk.wav"}]
    cfg["pipelines"] = [{"name": "p", "source": "mic", "task": task, "model": model}]
    return cfg


@pytest.mark.parametrize("command", ["check", "run"])
def test_detection_on_a_wav_source_exits_78(
    tmp_path: Path, models_dir: Path, media_dir: Path, command: str
) -> None:
    """A vision task on an audio source is a config error naming task and source, not exit 1."""
    cfg = wav_config(tmp_path, models_dir, media_dir, "detection", "yolox-nano-coco")
    args = ["--offline"] if command == "check" else []
    result = edged(command, *args, "--config", str(write_config(tmp_path / "c.toml", cfg)))
    out = result.stdout + result.stderr
    assert result.returncode == EX_CONFIG, out
    assert "pipelines[0].task" in out
    assert "pipelines[0].source 'mic'" in out
    assert "Traceback" not in out


def test_label_in_the_wrong_case_exits_78_with_the_right_name(
    tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    """labels = ["Person"] on a COCO model is refused at its key path, suggesting 'person'."""
    cfg = good_config(tmp_path, models_dir, media_dir, None)
    cfg["pipelines"][0]["labels"] = ["person", "Person", "bicyle"]
    result = edged("check", "--offline", "--config", str(write_config(tmp_path / "c.toml", cfg)))
    assert result.returncode == EX_CONFIG, result.stderr
    err = result.stderr
    assert "pipelines[0].labels[0]" not in err
    assert "pipelines[0].labels[1]: 'Person' is not a label" in err
    assert "did you mean 'person'" in err
    assert "pipelines[0].labels[2]: 'bicyle'" in err
    assert "'bicycle'" in err
    assert "edged models labels ssd-mobilenet-v1-coco-int8" in err


def test_bad_audio_label_makes_run_exit_78_with_its_key_path(
    tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    """An audio label YAMNet does not have stops `run` with 78 and the key path, not exit 1."""
    cfg = wav_config(tmp_path, models_dir, media_dir, "audio", "yamnet")
    cfg["pipelines"][0]["labels"] = ["Speech", "dog"]
    result = edged("run", "--config", str(write_config(tmp_path / "c.toml", cfg)))
    out = result.stdout + result.stderr
    assert result.returncode == EX_CONFIG, out
    assert "pipelines[0].labels[1]: 'dog' is not a label" in out
    assert "'Dog'" in out
    assert "Traceback" not in out


def test_models_labels_prints_one_name_per_line(models_dir: Path) -> None:
    """`edged models labels` lists bundled and downloaded label names in class-id order."""
    coco = edged("models", "labels", "yolox-nano-coco")
    assert coco.returncode == 0, coco.stderr
    assert coco.stdout.splitlines()[:3] == ["person", "bicycle", "car"]
    assert len(coco.stdout.splitlines()) == 80
    yamnet = edged("models", "labels", "--models-dir", str(models_dir), "yamnet")
    assert yamnet.returncode == 0, yamnet.stderr
    names = yamnet.stdout.splitlines()
    assert (len(names), names[0]) == (521, "Speech")
    assert "Child speech, kid speaking" in names


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("no-such-model", "'no-such-model' is not in the catalog"),
        ("movenet-lightning-int8", "keypoints"),
        ("/srv/model.tflite", "label_file"),
    ],
)
def test_models_labels_explains_names_without_labels(name: str, needle: str) -> None:
    """An unknown name, a pose model or a model path gets a one-line error, not a traceback."""
    result = edged("models", "labels", name)
    assert result.returncode == EX_FAILURE
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# --- MQTT credentials (issue 17 item 6) --------------------------------------------


@pytest.mark.broker
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_refused_login_is_a_config_error(
    tmp_path: Path,
    models_dir: Path,
    media_dir: Path,
    broker_auth: RunningBroker,
    protocol: str,
) -> None:
    """A wrong password is reported by `check` (exit 78) naming the keys; it is never printed."""
    cfg = good_config(tmp_path, models_dir, media_dir, broker_auth)
    cfg["mqtt"]["protocol"] = protocol
    cfg["mqtt"]["password_file"].write_text("not-the-password\n")
    result = edged("check", "--config", str(write_config(tmp_path / "c.toml", cfg)))
    err = result.stderr
    assert result.returncode == EX_CONFIG, err
    assert "mqtt.password_file: broker" in err
    assert "refused the login of user 'edged'" in err
    assert "not-the-password" not in result.stdout + err


@pytest.mark.broker
def test_anonymous_login_refused_names_the_username(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker_auth: RunningBroker
) -> None:
    """No credentials against a broker that needs them: an error at mqtt.username."""
    cfg = good_config(tmp_path, models_dir, media_dir, broker_auth)
    cfg["mqtt"].update(username="", password_file="")
    result = edged("check", "--config", str(write_config(tmp_path / "c.toml", cfg)))
    assert result.returncode == EX_CONFIG, result.stderr
    assert "mqtt.username: broker" in result.stderr
    assert "anonymous" in result.stderr


@pytest.mark.broker
def test_accepted_login_on_loopback_passes_without_warning(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker_auth: RunningBroker
) -> None:
    """The right password to a loopback broker checks OK; no clear-text warning for loopback."""
    cfg = good_config(tmp_path, models_dir, media_dir, broker_auth)
    result = edged("check", "--config", str(write_config(tmp_path / "c.toml", cfg)))
    assert result.returncode == 0, result.stderr
    assert "clear text" not in result.stderr


def test_password_without_tls_to_a_remote_broker_is_warned(
    tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    """A password sent to a non-loopback broker without TLS is a warning at mqtt.tls."""
    cfg = good_config(tmp_path, models_dir, media_dir, None)
    secret = tmp_path / "mqtt_password"
    secret.write_text("hunter2\n")
    secret.chmod(0o600)
    cfg["mqtt"].update(host="192.0.2.10", username="edged", password_file=secret)
    result = edged("check", "--offline", "--config", str(write_config(tmp_path / "c.toml", cfg)))
    assert result.returncode == 0, result.stderr
    assert "warning: mqtt.tls: the MQTT password of 'edged' is sent in clear text" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    cfg["mqtt"].update(tls=True)
    result = edged("check", "--offline", "--config", str(write_config(tmp_path / "c.toml", cfg)))
    assert result.returncode == 0, result.stderr
    assert "clear text" not in result.stderr


@pytest.mark.broker
def test_tls_login_passes_and_plain_mqtt_to_a_tls_port_is_named(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker_tls: RunningBroker
) -> None:
    """`check` logs in over verified TLS; tls = false against a TLS listener is an error."""
    cfg = good_config(tmp_path, models_dir, media_dir, broker_tls)
    result = edged("check", "--config", str(write_config(tmp_path / "c.toml", cfg)))
    assert result.returncode == 0, result.stderr
    cfg["mqtt"]["tls"] = False
    result = edged("check", "--config", str(write_config(tmp_path / "c.toml", cfg)))
    assert result.returncode == EX_CONFIG, result.stderr
    assert "mqtt.port: broker" in result.stderr
    assert "set tls = true" in result.stderr


def test_models_labels_reads_a_model_made_on_this_device(models_dir: Path, tmp_path: Path) -> None:
    """A local-catalog model (e.g. from `models quantize`) lists the labels of its entry."""
    yamnet = load_catalog().get("yamnet")
    local = yamnet.model_copy(
        update={
            "name": "yamnet-here",
            "derived_from": "yamnet",
            "file": yamnet.file.model_copy(update={"name": "yamnet_here.tflite", "urls": []}),
        }
    )
    mine = tmp_path / "models"
    mine.mkdir()
    shutil.copy(models_dir / "yamnet_class_map.csv", mine)
    write_local_entry(mine, local)
    result = edged("models", "labels", "--models-dir", str(mine), "yamnet-here")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == ["Speech", "Child speech, kid speaking"]


def test_labels_on_a_pose_pipeline_are_a_warning(
    tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    """Pose results carry no label, so `labels` there is named as having no effect."""
    cfg = good_config(tmp_path, models_dir, media_dir, None)
    cfg["pipelines"][0].update(task="pose", model="movenet-lightning-int8", labels=["person"])
    result = edged("check", "--offline", "--config", str(write_config(tmp_path / "c.toml", cfg)))
    assert result.returncode == 0, result.stderr
    assert "warning: pipelines[0].labels: has no effect" in result.stderr


@pytest.mark.broker
def test_check_login_leaves_a_running_daemons_session_alone(
    tmp_path: Path, models_dir: Path, broker_auth: RunningBroker
) -> None:
    """`check` logs in with a client id of its own: the daemon on the same config stays connected."""
    config = write_config(tmp_path / "c.toml", base_config(tmp_path, models_dir, broker_auth))
    sub = broker_auth.subscriber("edged/testdev/availability")
    with Daemon(config) as daemon:
        sub.wait_for(lambda m: m.payload == b"online", timeout=30)
        result = edged("check", "--config", str(config))
        assert result.returncode == 0, result.stderr
        time.sleep(1.0)  # a takeover would show as a disconnect and a reconnect by now
        assert "mqtt.disconnected" not in daemon.output
        rc, _ = daemon.stop()
    assert rc == 0
    assert [m.payload for m in sub.messages()] == [b"online", b"stopped"]


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
