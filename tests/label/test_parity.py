"""Labels per (model, accelerator) and the accuracy-parity check against the CPU label."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edged.__main__ import main
from edged.errors import EX_CONFIG
from edged.label.nutrition import (
    Accuracy,
    Latency,
    NutritionLabel,
    label_path,
    load_label,
    stored_accelerators,
)
from edged.label.parity import ParityError, check_parity
from edged.label.select import Requirement, select


def label(
    accelerator: str, recall: float, p50: float, golden: str = "coco-photos"
) -> NutritionLabel:
    """One model's label on one accelerator (the walk and the check only read these numbers)."""
    return NutritionLabel(
        model="det",
        task="detection",
        measured=True,
        file="det.onnx",
        sha256="1" * 64,
        size_bytes=2_000_000,
        quantization="float32",
        quantization_detail="float32",
        runtime="onnxruntime 1.24.1",
        accelerator=accelerator,
        latency_ms=Latency(p50=p50, p95=p50, p99=p50, mean=p50, infer_p50=p50),
        accuracy=Accuracy(
            golden=golden, items=9, metrics={"recall(person)": recall, "precision": 0.9}
        ),
        timestamp="2026-12-06T00:00:00Z",
    )


def test_a_drop_beyond_the_tolerance_fails_parity() -> None:
    """recall 1.0 on the CPU, 0.95 on the accelerator: fails at 0.02, passes at 0.1."""
    cpu, fast = label("cpu", 1.0, 30.0), label("openvino", 0.95, 10.0)
    strict = check_parity(fast, cpu, 0.02)
    assert not strict.passed
    assert strict.failed == ["recall(person)"]
    assert strict.drops == {"recall(person)": 0.05, "precision": 0.0}
    assert check_parity(fast, cpu, 0.1).passed


def test_labels_on_different_golden_sets_are_not_compared() -> None:
    with pytest.raises(ParityError, match="golden sets differ"):
        check_parity(label("openvino", 1.0, 10.0, golden="other"), label("cpu", 1.0, 30.0))


def test_select_never_chooses_a_pair_that_failed_parity() -> None:
    """The accelerator is the cheapest and meets the bar, but lost accuracy: the CPU is chosen."""
    cpu, fast = label("cpu", 1.0, 30.0), label("openvino", 0.95, 10.0)
    fast = fast.model_copy(update={"parity": check_parity(fast, cpu)})
    result = select([Requirement.parse("recall(person)>=0.9")], {"det": cpu, "det@openvino": fast})
    assert result.chosen == "det"
    first = result.trials[0]
    assert (first.model, first.verdict) == ("det@openvino", "failed")
    assert "accuracy parity failed vs cpu (recall(person) dropped more than 0.02)" in first.reasons


def test_bench_on_an_accelerator_keeps_the_cpu_label(
    benched: dict[str, NutritionLabel],
    label_models: Path,
    media_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``bench --accelerator xnnpack`` stores model@xnnpack beside the untouched CPU label."""
    models = shutil.copytree(label_models, tmp_path / "models")
    name = "movenet-lightning-int8"
    cpu_before = label_path(models, name).read_bytes()
    label_path(models, name, "xnnpack").unlink()
    assert stored_accelerators(models, name) == ["cpu"]
    rc = main(
        ["models", "bench", name, "--accelerator", "xnnpack", "--models-dir", str(models),
         "--media", str(media_dir), "--runs", "6", "--warmup", "1"]
    )  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert label_path(models, name).read_bytes() == cpu_before
    assert stored_accelerators(models, name) == ["cpu", "xnnpack"]
    xnn = load_label(models, name, benched[name].sha256, "xnnpack")
    assert xnn is not None
    assert xnn.accelerator == "xnnpack"
    assert xnn.parity is not None
    assert xnn.parity.reference == "cpu"
    assert xnn.parity.passed, xnn.parity
    assert " xnnpack " in out
    assert "pass (worst drop" in out


def test_bench_on_an_absent_accelerator_is_a_config_error(
    label_models: Path, media_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--accelerator cuda`` without CUDA: exit 78 naming the option and what is installed."""
    rc = main(
        ["models", "bench", "yolox-nano-coco", "--accelerator", "cuda",
         "--models-dir", str(label_models), "--media", str(media_dir)]
    )  # fmt: skip
    err = capsys.readouterr().err
    if "cuda" in err and rc == 0:
        pytest.skip("CUDA is installed here")
    assert rc == EX_CONFIG
    assert "--accelerator: yolox-nano-coco: cuda is not installed on this device" in err
    assert "CPUExecutionProvider" in err
