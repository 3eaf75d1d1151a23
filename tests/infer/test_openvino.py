"""The OpenVINO execution provider, for real: its own venv with ``onnxruntime-openvino``.

``onnxruntime-openvino`` installs the same ``onnxruntime`` module as the
``onnxruntime`` package, so the two cannot share an environment: the tests
build a venv with it and edged's other dependencies (everything but
onnxruntime), once, cached under ``~/.cache/edged-tests``, and run this
worktree's edged there through PYTHONPATH. They are skipped, saying why,
only when the package cannot be installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edged.catalog.catalog import load_catalog
from edged.catalog.resolve import resolve_entry
from edged.config.settings import PipelineSettings
from edged.errors import EX_CONFIG
from edged.infer.registry import load_model
from edged.label.golden import read_image
from edged.tasks import build_task
from edged.types import Frame, iou
from tests.helpers.broker import RunningBroker, matching
from tests.helpers.daemon import Daemon, base_config, write_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MODEL = "yolox-nano-coco"
PACKAGE = "onnxruntime-openvino>=1.20"
PHOTOS = ("*.jpg", "*.png")

#: One JSON document: the accelerator the model got, and each photo's detections.
DETECT = """
import json, sys
from pathlib import Path
from edged.catalog.catalog import load_catalog
from edged.catalog.resolve import resolve_entry
from edged.infer.registry import load_model
from edged.label.golden import read_image
from edged.config.settings import PipelineSettings
from edged.tasks import build_task
from edged.types import Frame

models, accelerator, photos = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
catalog = load_catalog(models_dir=models)
resolved = resolve_entry(catalog, catalog.get("yolox-nano-coco"), models)
model = load_model(resolved.path, runtime=resolved.runtime, threads=2, accelerator=accelerator)
task = build_task(
    PipelineSettings(name="t", source="s", task="detection", model="yolox-nano-coco"),
    resolved,
    model,
)
out = {"accelerator": model.accelerator, "photos": {}}
for i, photo in enumerate(photos):
    frame = Frame(id=i, ts=0.0, mono=0.0, source="photos", image=read_image(Path(photo)))
    result = task(frame, 0.25)
    out["photos"][Path(photo).name] = [[d.label, d.score, list(d.box)] for d in result.items]
print(json.dumps(out))
"""


def _requirements() -> list[str]:
    """edged's dependencies without onnxruntime, which onnxruntime-openvino replaces."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return [PACKAGE, *(d for d in deps if not d.replace(" ", "").startswith("onnxruntime"))]


@pytest.fixture(scope="session")
def openvino_python() -> Path:
    """A venv with onnxruntime-openvino and edged's other dependencies, built once and cached."""
    reqs = _requirements()
    key = hashlib.sha256(json.dumps([sys.version, reqs]).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edged-tests"
    venv = cache / f"venv-openvino-{key}"
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return python
    cache.mkdir(parents=True, exist_ok=True)
    building = cache / f".building-{key}-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, timeout=120)
    pip = subprocess.run(
        [str(building / "bin" / "pip"), "install", "-q", *reqs],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if pip.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        pytest.skip(f"onnxruntime-openvino cannot be installed here: {pip.stderr.strip()[-400:]}")
    (building / ".complete").write_text("\n".join(reqs) + "\n")
    try:
        building.rename(venv)  # atomic: a half-built venv is never taken as cached
    except OSError:  # another session finished first: use its venv
        shutil.rmtree(building, ignore_errors=True)
    # A venv's scripts name its own path: rebuild the interpreter path after the rename.
    return python


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _photos(media_dir: Path) -> list[Path]:
    return sorted(p for pattern in PHOTOS for p in media_dir.glob(pattern))


@pytest.fixture
def models(models_dir: Path, tmp_path: Path) -> Path:
    """A private, writable models dir (labels and OpenVINO's cache are written into it)."""
    return shutil.copytree(models_dir, tmp_path / "models")


def _cpu_detections(models: Path, photos: list[Path]) -> dict[str, list[list[Any]]]:
    """The same detections with ONNX Runtime's CPU provider, in this (the main) environment."""
    catalog = load_catalog(models_dir=models)
    resolved = resolve_entry(catalog, catalog.get(MODEL), models)
    model = load_model(resolved.path, runtime=resolved.runtime, threads=2, accelerator="cpu")
    task = build_task(
        PipelineSettings(name="t", source="s", task="detection", model=MODEL), resolved, model
    )
    out = {}
    for i, photo in enumerate(photos):
        frame = Frame(id=i, ts=0.0, mono=0.0, source="photos", image=read_image(photo))
        out[photo.name] = [[d.label, d.score, list(d.box)] for d in task(frame, 0.25).items]
    model.close()
    return out


def _unmatched(
    mine: list[list[Any]], theirs: list[list[Any]], threshold: float = 0.5
) -> list[list[Any]]:
    """Detections of ``mine`` above ``threshold`` with no box of the same label at IoU >= 0.9."""
    return [
        d
        for d in mine
        if d[1] >= threshold
        and not any(o[0] == d[0] and iou(tuple(d[2]), tuple(o[2])) >= 0.9 for o in theirs)
    ]


def test_openvino_finds_what_the_cpu_provider_finds(
    openvino_python: Path, models: Path, media_dir: Path
) -> None:
    """On every shared photo, each box >= 0.5 has a same-label box at IoU >= 0.9 on the other."""
    photos = _photos(media_dir)
    result = subprocess.run(
        [str(openvino_python), "-c", DETECT, str(models), "openvino", *map(str, photos)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    ov = json.loads(result.stdout.strip().splitlines()[-1])
    assert ov["accelerator"] == "openvino"
    cpu = _cpu_detections(models, photos)
    assert sum(1 for dets in cpu.values() for d in dets if d[1] >= 0.5) >= 10  # not vacuous
    for photo in cpu:
        assert _unmatched(cpu[photo], ov["photos"][photo]) == [], photo
        assert _unmatched(ov["photos"][photo], cpu[photo]) == [], photo


class VenvDaemon(Daemon):
    """``edged run`` with the OpenVINO venv's interpreter."""

    def __init__(self, config: Path, python: Path) -> None:
        super().__init__(config, env={"PYTHONPATH": str(REPO)})
        self.python = python

    def start(self) -> VenvDaemon:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(self.python), "-m", "edged", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env,
            )
        return self


def _config(
    tmp_path: Path, models: Path, media_dir: Path, broker: RunningBroker | None, accelerator: str
) -> Path:
    cfg = base_config(tmp_path, models, broker)
    cfg["sources"] = [
        {"name": "cam0", "kind": "images", "uri": media_dir / "*.jpg", "fps": 2, "loop": True}
    ]
    cfg["pipelines"] = [
        {
            "name": "yard",
            "source": "cam0",
            "task": "detection",
            "model": MODEL,
            "accelerator": accelerator,
            "publish": "all",
        }
    ]
    return write_config(tmp_path / "edged.toml", cfg)


@pytest.mark.broker
def test_the_daemon_runs_yolox_on_openvino_and_publishes_its_label(
    openvino_python: Path, models: Path, media_dir: Path, broker: RunningBroker, tmp_path: Path
) -> None:
    """bench --accelerator openvino, then run: results flow, state/stats/label say openvino."""
    bench = subprocess.run(
        [str(openvino_python), "-m", "edged", "models", "bench", MODEL, "--accelerator",
         "openvino", "--models-dir", str(models), "--media", str(media_dir),
         "--runs", "8", "--warmup", "2"],
        capture_output=True, text=True, timeout=600, check=False, env=_env(),
    )  # fmt: skip
    assert bench.returncode == 0, bench.stderr[-2000:]
    assert (models / f"{MODEL}.label.json").exists()  # the CPU reference, measured first
    assert (models / f"{MODEL}@openvino.label.json").exists()

    sub = broker.subscriber("edged/testdev/#")
    with VenvDaemon(_config(tmp_path, models, media_dir, broker, "openvino"), openvino_python):
        label = json.loads(
            sub.wait_for(matching(f"edged/testdev/models/{MODEL}/label"), 60).payload
        )
        assert label["accelerator"] == "openvino"
        assert label["measured"] is True
        assert label["runtime"].startswith("onnxruntime 1.")
        assert label["parity"]["reference"] == "cpu"
        assert label["parity"]["passed"] is True, label["parity"]
        result = json.loads(sub.wait_for(matching("edged/testdev/yard/detections"), 30).payload)
        assert result["model"]["name"] == MODEL
        state = sub.wait_for(
            lambda m: (
                m.topic == "edged/testdev/state"
                and json.loads(m.payload).get("models", {}).get(MODEL) is not None
            ),
            10,
        )
        assert json.loads(state.payload)["models"][MODEL]["accelerator"] == "openvino"
        stats = json.loads(sub.wait_for(matching("edged/testdev/stats"), 10).payload)
        assert stats["pipelines"]["yard"]["accelerator"] == "openvino"


def test_an_openvino_device_that_is_absent_is_a_config_error(
    openvino_python: Path, models: Path, media_dir: Path, tmp_path: Path
) -> None:
    """openvino:GPU on a machine without an Intel GPU: the provider fails at session creation,
    ORT would run on the CPU instead; check exits 78 naming the key instead."""
    check = subprocess.run(
        [str(openvino_python), "-m", "edged", "check", "--config",
         str(_config(tmp_path, models, media_dir, None, "openvino:GPU"))],
        capture_output=True, text=True, timeout=120, check=False, env=_env(),
    )  # fmt: skip
    assert check.returncode == EX_CONFIG, check.stderr[-2000:]
    assert "pipelines[0].accelerator: yolox_nano.onnx: the OpenVINOExecutionProvider" in (
        check.stderr
    )
    assert "failed at session creation" in check.stderr
    assert "Traceback" not in check.stderr
