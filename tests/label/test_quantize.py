"""``edged models quantize``: a smaller int8 model, in the local catalog, as accurate as fp32 here."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from edged.catalog.catalog import LOCAL_CATALOG, load_catalog
from edged.catalog.fetch import sha256_file
from edged.errors import CatalogError
from edged.label.nutrition import NutritionLabel
from edged.label.quantize import Quantized as QuantizedModel
from edged.label.quantize import QuantizeError, quantize
from tests.label.conftest import INT8


class TestResult:
    """What the session's quantization produced."""

    def test_smaller_than_the_float_model(
        self, quantized: QuantizedModel, label_models: Path
    ) -> None:
        fp32 = (label_models / "yolox_nano.onnx").stat().st_size
        assert quantized.path.stat().st_size < 0.5 * fp32  # ~0.34x here

    def test_in_the_local_catalog_with_its_own_sha256(
        self, quantized: QuantizedModel, label_models: Path
    ) -> None:
        catalog = load_catalog(models_dir=label_models)
        entry = catalog.get(INT8)
        assert entry.derived_from == "yolox-nano-coco"
        assert entry.file.sha256 == sha256_file(quantized.path)
        assert entry.file.urls == []
        assert (entry.task, entry.decoder, entry.input.color) == ("detection", "yolox", "bgr")
        local = tomllib.loads((label_models / LOCAL_CATALOG).read_text())
        assert [m["name"] for m in local["model"]] == [INT8]
        assert load_catalog().names().count(INT8) == 0  # the bundled catalog is untouched

    def test_accuracy_is_reported_next_to_fp32(self, benched: dict[str, NutritionLabel]) -> None:
        """Calibrated on video frames, scored on the photos: person recall within 0.15 of fp32."""
        q, f = benched[INT8].accuracy, benched["yolox-nano-coco"].accuracy
        assert q is not None
        assert f is not None
        assert q.golden == f.golden == "coco-photos"
        assert q.metrics["recall(person)"] >= f.metrics["recall(person)"] - 0.15  # type: ignore[operator]
        assert benched[INT8].quantization == "int8"
        assert benched["yolox-nano-coco"].quantization == "float32"


class TestRefusals:
    """What cannot be quantized is refused before any work."""

    def test_a_tflite_model(self, label_models: Path, calibration_dir: Path) -> None:
        catalog = load_catalog(models_dir=label_models)
        with pytest.raises(QuantizeError, match="only ONNX models are quantized here"):
            quantize(catalog, "ssd-mobilenet-v1-coco-int8", label_models, calibration_dir, "x")

    def test_no_calibration_images(self, label_models: Path, tmp_path: Path) -> None:
        catalog = load_catalog(models_dir=label_models)
        with pytest.raises(QuantizeError, match="no calibration images"):
            quantize(catalog, "yolox-nano-coco", label_models, tmp_path, "x")

    def test_a_bundled_name(self, label_models: Path, calibration_dir: Path) -> None:
        catalog = load_catalog(models_dir=label_models)
        with pytest.raises(QuantizeError, match="already a catalog model"):
            quantize(catalog, "yolox-nano-coco", label_models, calibration_dir, "yamnet")

    def test_a_name_that_cannot_be_a_topic_segment(
        self, label_models: Path, calibration_dir: Path
    ) -> None:
        catalog = load_catalog(models_dir=label_models)
        with pytest.raises(QuantizeError, match="cannot be used"):
            quantize(catalog, "yolox-nano-coco", label_models, calibration_dir, "a/b")


def test_a_local_entry_may_not_shadow_a_bundled_one(
    quantized: QuantizedModel, label_models: Path, tmp_path: Path
) -> None:
    shutil.copy(label_models / LOCAL_CATALOG, tmp_path / LOCAL_CATALOG)
    text = (tmp_path / LOCAL_CATALOG).read_text().replace(INT8, "yamnet")
    (tmp_path / LOCAL_CATALOG).write_text(text)
    with pytest.raises(CatalogError, match="redefines bundled model"):
        load_catalog(models_dir=tmp_path)
