"""Accelerators behind the Model protocol: what is chosen, what is refused, and what it computes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from structlog.testing import capture_logs

from edged.config.settings import PipelineSettings
from edged.infer import accel
from edged.infer.accel import AcceleratorError
from edged.infer.registry import load_model
from tests.helpers.vision import read_rgb

SSD = "coco_ssd_mobilenet_v1_1.0_quant.tflite"
YOLOX = "yolox_nano.onnx"


def test_an_absent_execution_provider_is_refused_naming_what_is_installed(
    model_mirror: Path,
) -> None:
    """cuda on a machine without onnxruntime-gpu: an AcceleratorError listing ORT's providers."""
    with pytest.raises(AcceleratorError) as err:
        load_model(model_mirror / YOLOX, accelerator="cuda")
    message = str(err.value)
    assert "cuda is not installed" in message
    assert "CPUExecutionProvider" in message  # onnxruntime.get_available_providers()
    assert "cpu" in err.value.available


def test_an_accelerator_of_the_other_runtime_is_refused(model_mirror: Path) -> None:
    """xnnpack is a LiteRT delegate: asking it for an ONNX model names what ORT takes."""
    with pytest.raises(AcceleratorError, match="xnnpack is not an accelerator of onnxruntime"):
        load_model(model_mirror / YOLOX, accelerator="xnnpack")


def test_an_absent_edge_tpu_is_refused(model_mirror: Path) -> None:
    """No libedgetpu here: edgetpu is refused, xnnpack and cpu are offered instead."""
    if accel.edgetpu_present():
        pytest.skip("an Edge TPU runtime is installed on this machine")
    with pytest.raises(AcceleratorError) as err:
        load_model(model_mirror / SSD, accelerator="edgetpu")
    assert err.value.available == ["xnnpack", "cpu"]


def test_auto_falls_back_to_the_cpu_with_one_warning(
    model_mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX on a CPU-only onnxruntime: auto runs on the CPU; two models, one warning."""
    monkeypatch.setattr(accel, "_warned_fallback", set())
    if accel.available("onnxruntime") != ["cpu"]:
        pytest.skip("this onnxruntime has an execution provider besides the CPU")
    with capture_logs() as logs:
        first = load_model(model_mirror / YOLOX, accelerator="auto")
        second = load_model(model_mirror / YOLOX, accelerator="auto")
    assert (first.accelerator, second.accelerator) == ("cpu", "cpu")
    chosen = [e for e in logs if e["event"] == "infer.accelerator_chosen"]
    assert [e["accelerator"] for e in chosen] == ["cpu", "cpu"]
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["infer.accelerator_fallback"]
    assert "CPUExecutionProvider" in warnings[0]["hint"]
    first.close()
    second.close()


def test_auto_gives_litert_its_xnnpack_delegate_without_a_warning(model_mirror: Path) -> None:
    """LiteRT's default path is XNNPACK: auto names it, and it is not a fallback."""
    with capture_logs() as logs:
        model = load_model(model_mirror / SSD, accelerator="auto")
    assert model.accelerator == "xnnpack"
    assert not [e for e in logs if e["log_level"] == "warning"]
    model.close()


def test_xnnpack_and_the_builtin_cpu_kernels_agree(model_mirror: Path, media_dir: Path) -> None:
    """cpu (built-in kernels, no delegate) and xnnpack find the same objects on a photo."""
    image = cv2.resize(read_rgb(media_dir / "grace_hopper.jpg"), (300, 300))[np.newaxis]
    out = {}
    for name in ("cpu", "xnnpack"):
        model = load_model(model_mirror / SSD, accelerator=name, threads=2)
        assert model.accelerator == name
        out[name] = model.run([image])
        model.close()
    _, cpu_classes, cpu_scores, _ = out["cpu"]
    _, xnn_classes, xnn_scores, _ = out["xnnpack"]
    assert cpu_classes[0][:2].tolist() == xnn_classes[0][:2].tolist()  # person, tie
    assert np.allclose(cpu_scores[0][:2], xnn_scores[0][:2], atol=0.05)


@pytest.mark.parametrize("value", ["gpu", "CUDA", "openvino:", "tensorrt:GPU", ""])
def test_an_unknown_accelerator_name_is_a_settings_error(value: str) -> None:
    """The key takes the runtimes' names only; a typo is refused with the list."""
    with pytest.raises(ValueError, match="unknown accelerator"):
        PipelineSettings(name="door", source="cam0", task="detection", model="m", accelerator=value)


def test_openvino_takes_a_device_type() -> None:
    """openvino:GPU is OpenVINO's device_type; the label names it in full."""
    p = PipelineSettings(
        name="door", source="cam0", task="detection", model="m", accelerator="openvino:GPU"
    )
    assert accel.parse(p.accelerator) == accel.Choice("openvino", "GPU")
    assert accel.ort_provider_options(accel.parse(p.accelerator), None)[0] == (
        "OpenVINOExecutionProvider",
        {"device_type": "GPU"},
    )
