"""``edged demo`` on a fresh machine: the shipped sample media, and models that cannot be fetched.

The acceptance test clones the repository into an empty directory (no
``shared/`` beside it, ``EDGED_MEDIA_DIR`` unset) and runs the README's first
command there, with the model mirror standing in for the publishers' URLs.
The others run the demo in-process against a catalog whose URLs point at a
real HTTP server on loopback that has none of the files.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from edged.catalog.catalog import data_dir, default_catalog_path
from edged.demo.run import (
    DEMO_MODELS,
    DEMO_PHOTOS,
    DEMO_SOUND,
    run_demo,
    stage_photos,
)
from edged.errors import EX_UNAVAILABLE
from edged.label.golden import golden_dir, load_golden

REPO = Path(__file__).resolve().parents[2]
MEDIA = REPO / "models" / "media"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the shipped media -------------------------------------------------------------


def _listing() -> dict[str, tuple[str, int]]:
    """``file → (sha256, size)`` from the table in models/media/MEDIA.md."""
    rows = re.findall(
        r"^\| `([^`]+)` \|.*?\| `([0-9a-f]{64})` \| (\d+) \|",
        (MEDIA / "MEDIA.md").read_text(),
        re.M,
    )
    return {name: (sha, int(size)) for name, sha, size in rows}


def test_every_shipped_media_file_is_listed_with_its_sha256_and_size() -> None:
    """MEDIA.md lists exactly the files in models/media, with their real hash and size."""
    files = {p.name: p for p in MEDIA.iterdir() if p.name != "MEDIA.md"}
    listing = _listing()
    assert set(listing) == set(files)
    for name, (sha, size) in listing.items():
        assert (_sha256(files[name]), files[name].stat().st_size) == (sha, size), name


def test_only_media_the_demo_or_a_golden_set_uses_are_shipped() -> None:
    """Every file the demo or a shipped golden set names is shipped, and nothing else is."""
    used = {*DEMO_PHOTOS, DEMO_SOUND[0]}
    for path in golden_dir().glob("*.toml"):
        for item in load_golden(path).items:
            used |= {item.media, item.keypoints_csv} - {""}
    assert {p.name for p in MEDIA.iterdir()} - {"MEDIA.md"} == used


def test_the_demo_media_are_the_shipped_ones_by_sha256() -> None:
    """The hashes the demo checks before use match the shipped files."""
    for name, sha in (*DEMO_PHOTOS.items(), DEMO_SOUND):
        assert _sha256(MEDIA / name) == sha, name


def test_staging_replaces_links_left_by_a_removed_checkout(tmp_path: Path) -> None:
    """A workdir whose links dangle (their venv or clone was deleted) is staged again."""
    dest = tmp_path / "media"
    dest.mkdir()
    (dest / "grace_hopper.jpg").symlink_to(tmp_path / "deleted-venv" / "grace_hopper.jpg")
    stage_photos(MEDIA, dest)
    for name in (*DEMO_PHOTOS, DEMO_SOUND[0]):
        assert (dest / name).resolve() == (MEDIA / name).resolve()


# -- models that cannot be fetched -------------------------------------------------


def _unreachable_catalog(tmp_path: Path, base_url: str) -> Path:
    """The bundled catalog with every URL moved to ``base_url`` (a server without the files)."""
    data: dict[str, Any] = tomllib.loads(default_catalog_path().read_text())
    for model in data["model"]:
        model["file"]["urls"] = [f"{base_url}/{model['file']['name']}"]
        if model.get("labels", {}).get("urls"):
            model["labels"]["urls"] = [f"{base_url}/{model['labels']['name']}"]
    root = tmp_path / "catalog"
    shutil.copytree(data_dir() / "labels", root / "labels")  # bundled label lists
    (root / "catalog.toml").write_text(tomli_w.dumps(data))
    return root / "catalog.toml"


def _partial_mirror(tmp_path: Path, model_mirror: Path, without: set[str]) -> Path:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for f in model_mirror.iterdir():
        if f.name not in without:
            (mirror / f.name).symlink_to(f)
    return mirror


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, http_root: tuple[str, Path]) -> str:
    """Model URLs answer 404 (a real loopback server), no broker given, EDGED_MEDIA_DIR unset."""
    base, _ = http_root
    monkeypatch.setenv("EDGED_CATALOG", str(_unreachable_catalog(tmp_path, base)))
    for var in ("EDGED_MEDIA_DIR", "EDGED_MODELS__MIRROR", "EDGED_MQTT__HOST", "EDGED_MQTT__PORT"):
        monkeypatch.delenv(var, raising=False)
    return base


def test_no_model_at_all_fails_naming_each_model_where_it_tried_and_what_to_do(
    offline: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Offline with an empty mirror: exit 69, every model named with mirror and URL tried."""
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    monkeypatch.setenv("EDGED_MODEL_MIRROR", str(empty))
    out, err = io.StringIO(), io.StringIO()
    rc = run_demo(duration_s=1, workdir=tmp_path / "work", media=None, out=out, err=err)
    assert rc == EX_UNAVAILABLE
    text = err.getvalue()
    for name in DEMO_MODELS:
        assert f"model {name} could not be installed" in text
    assert f"mirror {empty}: no file yolox_nano.onnx" in text
    assert f"{offline}/yolox_nano.onnx: File not found" in text
    assert "to get them: set EDGED_MODEL_MIRROR=DIR" in text
    pull = (
        f"edged models pull {' '.join(DEMO_MODELS)} --mirror DIR --models-dir {tmp_path / 'work'}"
    )
    assert pull in text
    assert "no demo model could be installed, so nothing can run" in text
    assert "started mosquitto" not in out.getvalue()  # nothing was started for nothing


def test_the_models_mirror_setting_comes_before_the_environment_variable(
    offline: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """[models] mirror (here EDGED_MODELS__MIRROR) wins over EDGED_MODEL_MIRROR, as in models pull."""
    setting, env = tmp_path / "setting", tmp_path / "env"
    setting.mkdir()
    env.mkdir()
    monkeypatch.setenv("EDGED_MODELS__MIRROR", str(setting))
    monkeypatch.setenv("EDGED_MODEL_MIRROR", str(env))
    out, err = io.StringIO(), io.StringIO()
    assert (
        run_demo(duration_s=1, workdir=tmp_path / "w", media=None, out=out, err=err)
        == EX_UNAVAILABLE
    )
    assert f"models: from mirror {setting}, then the publishers' URLs" in out.getvalue()
    assert f"mirror {setting}: no file yamnet.tflite" in err.getvalue()
    assert str(env) not in out.getvalue() + err.getvalue()


@pytest.mark.broker
def test_a_model_that_cannot_be_fetched_leaves_only_its_pipeline_out(
    offline: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_mirror: Path
) -> None:
    """YOLOX missing from the mirror and its URL: the other three pipelines run, exit 0."""
    monkeypatch.setenv(
        "EDGED_MODEL_MIRROR", str(_partial_mirror(tmp_path, model_mirror, {"yolox_nano.onnx"}))
    )
    out, err = io.StringIO(), io.StringIO()
    rc = run_demo(duration_s=4, workdir=tmp_path / "work", media=None, out=out, err=err)
    printed = out.getvalue()
    assert rc == 0, err.getvalue()
    assert "model yolox-nano-coco could not be installed, so pipeline 'yolox' is left out" in (
        err.getvalue()
    )
    assert f"{offline}/yolox_nano.onnx: File not found" in err.getvalue()
    assert "edged models pull yolox-nano-coco --mirror DIR" in err.getvalue()
    assert "pipelines: ssd, body, sound" in printed
    assert printed.rstrip().endswith("left out (model not installed, see above): yolox")
    assert re.search(r"edged/demo/ssd/detections +seq=\d+ frame=\d+ person", printed)
    assert re.search(r"edged/demo/sound/audio +seq=\d+ window \S+ Speech", printed)
    assert "edged/demo/body/pose" in printed
    assert "edged/demo/yolox/" not in printed


# -- the README's first command in a fresh clone --------------------------------------


def _readme_demo_command(readme: Path, duration_s: int) -> str:
    """The README's first command from ``python3 -m venv`` on, with ``--duration`` added.

    The ``apt-get`` part is left to the machine (mosquitto and python3-venv are
    installed by the test environment, as ``.ci/run`` does).
    """
    block = re.findall(r"```sh\n(.*?)```", readme.read_text(), flags=re.S)[0].strip()
    apt, venv = block.split(" && python3 -m venv", 1)
    assert apt.startswith("apt-get update && apt-get install -y")
    command = "python3 -m venv" + venv
    assert command.endswith(".venv/bin/edged demo")
    assert ".venv/bin/pip install . " in command  # a real, non-editable install
    return f"{command} --duration {duration_s}"


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.timeout(900)
def test_a_fresh_clone_runs_the_readme_demo(tmp_path: Path, model_mirror: Path) -> None:
    """git clone + the README's first command, no shared/ and no EDGED_MEDIA_DIR: exit 0, results."""
    empty = tmp_path / "fresh"
    empty.mkdir()
    clone = empty / "edged"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    assert sorted(p.name for p in empty.iterdir()) == ["edged"]  # no shared/ beside it
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EDGED_", "PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE"))
    }
    env |= {
        "EDGED_MODEL_MIRROR": str(model_mirror),  # stands in for the publishers' URLs
        "HOME": str(tmp_path / "home"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    command = _readme_demo_command(clone / "README.md", duration_s=8)
    run = subprocess.run(
        ["sh", "-c", command],
        check=False,
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "pipelines: ssd, yolox, body, sound" in out
    assert re.search(r"edged/demo/ssd/detections +seq=\d+ frame=\d+ person", out)
    assert re.search(r"edged/demo/yolox/detections +seq=\d+ frame=\d+ person", out)
    assert re.search(r"edged/demo/body/pose +seq=\d+ frame=\d+ person", out)
    assert re.search(r"edged/demo/sound/audio +seq=\d+ window \S+ Speech", out)
    assert "left out" not in out
    # The media came from the installed package, not from the clone's source tree.
    installed = clone / ".venv" / "share" / "edged" / "models" / "media"
    assert sorted(p.name for p in installed.iterdir()) == sorted(p.name for p in MEDIA.iterdir())
    for f in MEDIA.iterdir():
        assert (installed / f.name).read_bytes() == f.read_bytes(), f.name
    staged = tmp_path / "cache" / "edged-demo" / "media" / "grace_hopper.jpg"
    assert staged.resolve() == (installed / "grace_hopper.jpg").resolve()
