"""Fixtures of the label tests: a writable models dir with the quantized YOLOX, benched once.

Quantizing and benching take tens of seconds, so both happen once per
session: the quantized model is calibrated on frames of the walking video
(not on the golden photos it is then scored on), and ``edged models bench
--all`` measures all five models through the real CLI, each in its own
process, exactly as an operator would run it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import pytest

from edged.__main__ import main
from edged.catalog.catalog import load_catalog
from edged.label.nutrition import NutritionLabel, label_key, load_label, stored_accelerators
from edged.label.quantize import Quantized, quantize

INT8 = "yolox-nano-coco-int8"
FIVE = (
    "ssd-mobilenet-v1-coco-int8",
    "yolox-nano-coco",
    INT8,
    "movenet-lightning-int8",
    "yamnet",
)


@pytest.fixture(scope="session")
def calibration_dir(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every 10th frame of the walking video (31 frames): the device's own camera view."""
    out = tmp_path_factory.mktemp("calibration")
    cap = cv2.VideoCapture(str(media_dir / "person_walking_0-30s.mp4"))
    index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index % 10 == 0:
            cv2.imwrite(str(out / f"frame_{index:04d}.jpg"), frame)
        index += 1
    cap.release()
    return out


@pytest.fixture(scope="session")
def label_models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private, writable copy of the pulled models (labels and local catalog go here)."""
    dest = tmp_path_factory.mktemp("label-models")
    for f in models_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, dest / f.name)
    return dest


@pytest.fixture(scope="session")
def quantized(label_models: Path, calibration_dir: Path) -> Quantized:
    """yolox-nano-coco quantized to int8 QDQ and added to the local catalog."""
    catalog = load_catalog(models_dir=label_models)
    return quantize(catalog, "yolox-nano-coco", label_models, calibration_dir, INT8)


@pytest.fixture(scope="session")
def benched(quantized: Quantized, label_models: Path, media_dir: Path) -> dict[str, NutritionLabel]:
    """``edged models bench --all``: the labels of all five models, stored beside them, each on
    the accelerator the daemon would run it on (XNNPACK for LiteRT, the CPU for ONNX here)."""
    rc = main(
        [
            "models", "bench", "--all", "--models-dir", str(label_models),
            "--media", str(media_dir), "--runs", "12", "--warmup", "2",
        ]
    )  # fmt: skip
    assert rc == 0
    catalog = load_catalog(models_dir=label_models)
    labels = {}
    for name in FIVE:
        # Where the daemon runs it (auto): the accelerator label when there is one.
        accelerator = stored_accelerators(label_models, name)[-1]
        label = load_label(label_models, name, catalog.get(name).file.sha256, accelerator)
        assert label is not None, f"no label stored for {name}"
        labels[name] = label
    return labels


@pytest.fixture(scope="session")
def benched_pairs(
    benched: dict[str, NutritionLabel], label_models: Path
) -> dict[str, NutritionLabel]:
    """Every (model, accelerator) label ``bench --all`` stored, keyed ``model[@accelerator]``.

    ``--all`` benches where the daemon would run (auto): LiteRT models on
    XNNPACK, plus their CPU reference for the parity check; ONNX on the CPU here.
    """
    catalog = load_catalog(models_dir=label_models)
    out = {}
    for name in FIVE:
        for accelerator in stored_accelerators(label_models, name):
            label = load_label(label_models, name, catalog.get(name).file.sha256, accelerator)
            assert label is not None
            out[label_key(name, accelerator)] = label
    return out
