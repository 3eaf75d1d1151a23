"""Quantization is read from the model files themselves (ONNX protobuf, LiteRT tensor list)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.errors import ModelError
from edged.label.fileinfo import read_quantization
from edged.label.quantize import Quantized
from tests.helpers.onnx_models import build_yolov8_model


@pytest.mark.parametrize(
    ("file", "weights", "activations"),
    [
        ("coco_ssd_mobilenet_v1_1.0_quant.tflite", "uint8", "uint8"),
        ("movenet_singlepose_lightning_int8.tflite", "int8", "int8"),
        ("yamnet.tflite", "int8", "int8"),
        ("yolox_nano.onnx", "float32", "float32"),
    ],
)
def test_reference_models(models_dir: Path, file: str, weights: str, activations: str) -> None:
    q = read_quantization(models_dir / file)
    assert (q.weights, q.activations) == (weights, activations)


def test_the_quantized_yolox_is_int8_qdq(quantized: Quantized) -> None:
    q = read_quantization(quantized.path)
    assert (q.weights, q.activations, q.scheme) == ("int8", "uint8", "QDQ")
    assert q.summary == "int8 (QDQ, activations uint8)"


def test_a_built_float_model(tmp_path: Path) -> None:
    path = build_yolov8_model(tmp_path / "v8.onnx", [(32, 32, 10, 10, 0, 0.9)])
    assert read_quantization(path).summary == "float32"


def test_garbage_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelError, match=r"bad\.onnx"):
        read_quantization(bad)
