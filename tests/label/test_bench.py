"""``edged models bench --all``: one command, five labels, every field measured on this machine."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from edged.__main__ import main
from edged.catalog.catalog import load_catalog
from edged.label.bench import BenchError, BenchSpec, bench
from edged.label.nutrition import NutritionLabel, label_path
from tests.label.conftest import FIVE, INT8

QUANT = {
    "ssd-mobilenet-v1-coco-int8": "uint8",
    "yolox-nano-coco": "float32",
    INT8: "int8",
    "movenet-lightning-int8": "int8",
    "yamnet": "int8",
}
ACCURACY = {
    "detection": ("coco-photos", {"recall(person)", "precision(person)", "recall", "precision"}),
    "pose": ("squat-pose", {"pck", "recall(person)", "precision(person)"}),
    "audio": ("sound-clips", {"top1", "top3"}),
}


@pytest.mark.parametrize("name", FIVE)
def test_every_label_is_complete(
    name: str, benched: dict[str, NutritionLabel], label_models: Path
) -> None:
    lab = benched[name]
    entry = load_catalog(models_dir=label_models).get(name)
    assert lab.measured
    assert lab.model == name
    assert lab.task == entry.task
    assert (lab.sha256, lab.size_bytes) == (entry.file.sha256, entry.file.size)
    assert lab.quantization == QUANT[name]
    assert re.fullmatch(r"(onnxruntime|ai-edge-litert|tflite-runtime) \d+\.\d+.*", lab.runtime)
    assert lab.threads == 2
    assert lab.runs == 12
    assert lab.warmup == 2
    assert lab.device is not None
    assert lab.device.cpu
    assert lab.device.cores >= 1
    lat = lab.latency_ms
    assert lat is not None
    assert lat.infer_p50 > 0
    assert lat.p50 <= lat.p95 <= lat.p99
    assert lab.throughput_ips is not None
    assert lab.throughput_ips > 0
    assert lab.peak_mem_mb is not None
    assert lab.peak_mem_mb > 1  # a model and its arena
    assert lab.energy is not None
    assert lab.energy.mj_per_inference > 0
    assert lab.energy.estimated == (lab.energy.method == "estimated")
    golden, metrics = ACCURACY[lab.task]
    assert lab.accuracy is not None
    assert lab.accuracy.golden == golden
    assert metrics <= lab.accuracy.metrics.keys()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lab.timestamp)
    assert lab.accelerator == ("cpu" if lab.runtime.startswith("onnxruntime") else "xnnpack")
    stored = json.loads(label_path(label_models, name, lab.accelerator).read_text())
    assert stored["sha256"] == lab.sha256
    assert stored["measured"] is True


def test_reference_accuracy(benched: dict[str, NutritionLabel]) -> None:
    """The reference models do on the golden sets what MODELS.md says they do (with LiteRT's
    default XNNPACK path, as there)."""
    m = {n: benched[n].accuracy.metrics for n in FIVE}  # type: ignore[union-attr]
    assert m["yolox-nano-coco"]["recall(person)"] == 1.0
    assert m["ssd-mobilenet-v1-coco-int8"]["recall(person)"] >= 0.85
    assert m["movenet-lightning-int8"]["pck"] >= 0.9  # within 0.03 of Coral's reference
    assert m["movenet-lightning-int8"]["precision(person)"] == 1.0  # no pose on cat/cup/rocket
    assert m["yamnet"]["top3"] == 1.0
    assert m["yamnet"]["top1"] >= 0.6


def test_the_output_compares_the_quantized_model_with_fp32(
    benched: dict[str, NutritionLabel],
    label_models: Path,
    media_dir: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # Benching stores new labels: do it in a copy, so the session's `benched`
    # labels stay what the select tests compare the stored files against.
    models = shutil.copytree(label_models, tmp_path / "models")
    rc = main(
        ["models", "bench", "yolox-nano-coco", INT8, "--models-dir", str(models),
         "--media", str(media_dir), "--runs", "6", "--warmup", "1"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert re.search(rf"{INT8} vs yolox-nano-coco: size 1\.\d\d vs 3\.66 MB \(0\.3\dx\), p50 ", out)
    assert "recall 1.00 vs 1.00" in out or "recall 0." in out


def test_a_golden_set_of_another_task_is_refused(label_models: Path, media_dir: Path) -> None:
    spec = BenchSpec(
        model="yamnet", models_dir=str(label_models), media=str(media_dir), golden="coco-photos"
    )
    with pytest.raises(BenchError, match="'coco-photos' is for detection"):
        bench(spec)
