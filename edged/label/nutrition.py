"""The nutrition label document: what it holds, where it is stored, its static part.

A measured label is written by ``edged models bench`` beside the model file
it describes, one per (model, accelerator): ``<models dir>/<model>.label.json``
for the CPU (the reference), ``<model>@<accelerator>.label.json`` for any
other (``yolox-nano-coco@openvino.label.json``), so that measuring on an
accelerator never clobbers the CPU label. A label is valid only for the file
whose sha256 it names: after a model is replaced, its old label is ignored
rather than published for the wrong file. The daemon publishes the stored
label of the accelerator the model runs on, retained, on
``<prefix>/<dev>/models/<model>/label``, or, when none was measured, the
*static* part (size, quantization, runtime, accelerator, sha256) with
``measured: false``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edged import __version__
from edged.catalog.resolve import ResolvedModel
from edged.label.fileinfo import read_quantization

log = structlog.get_logger(__name__)

LABEL_SUFFIX = ".label.json"


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Latency(_Doc):
    """Per-input latency after warm-up (preprocess + inference + decode), milliseconds."""

    p50: float
    p95: float
    p99: float
    mean: float
    infer_p50: float = Field(description="Inference alone (model.run), median.")


class Energy(_Doc):
    """Energy per inference and how it was obtained."""

    mj_per_inference: float
    method: Literal["rapl", "sensor", "estimated"]
    estimated: bool
    profile: str
    detail: str


class Accuracy(_Doc):
    """Metrics on one golden set, plus per-item counts for reading the numbers."""

    golden: str
    items: int
    metrics: dict[str, float | None]
    details: list[dict[str, Any]] = Field(default_factory=list)


class Device(_Doc):
    """Where the label was measured."""

    cpu: str
    cores: int
    arch: str
    profile: str


class Parity(_Doc):
    """An accelerator's golden-set metrics against the CPU reference label of the same file."""

    reference: str = Field(description="Accelerator of the reference label (cpu).")
    tolerance: float = Field(description="Largest drop allowed, absolute (0.02 = 2 points).")
    passed: bool
    drops: dict[str, float] = Field(description="Reference minus this label, per metric.")
    failed: list[str] = Field(
        default_factory=list, description="Metrics that dropped by more than the tolerance."
    )


class NutritionLabel(_Doc):
    """One model's cost and quality on this device (docs/nutrition-labels.md), payload version 1."""

    v: int = 1
    model: str
    task: str
    measured: bool
    file: str
    sha256: str
    size_bytes: int
    quantization: str
    quantization_detail: str
    runtime: str
    accelerator: str = Field(
        "cpu", description="Where it was measured: cpu, xnnpack, openvino, cuda, ... (resolved)."
    )
    parity: Parity | None = Field(
        None, description="Accuracy against the CPU label; None on the CPU itself."
    )
    threads: int | None = None
    device: Device | None = None
    latency_ms: Latency | None = None
    throughput_ips: float | None = Field(None, description="Inferences per second, one stream.")
    peak_mem_mb: float | None = Field(None, description="RSS growth from loading + running.")
    energy: Energy | None = None
    accuracy: Accuracy | None = None
    runs: int | None = None
    warmup: int | None = None
    timestamp: str
    edged: str = __version__

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6

    def metrics(self) -> dict[str, float | None]:
        """Every number a requirement can name (``p95_ms``, ``recall(person)``, …)."""
        out: dict[str, float | None] = {"size_mb": self.size_mb}
        if self.latency_ms is not None:
            lat = self.latency_ms
            out |= {"p50_ms": lat.p50, "p95_ms": lat.p95, "p99_ms": lat.p99, "mean_ms": lat.mean}
        if self.throughput_ips is not None:
            out["throughput"] = self.throughput_ips
        if self.peak_mem_mb is not None:
            out["peak_mb"] = self.peak_mem_mb
        if self.energy is not None:
            out["energy_mj"] = self.energy.mj_per_inference
        if self.accuracy is not None:
            out |= self.accuracy.metrics
        return out

    def cost(self) -> float | None:
        """The order ``select`` walks in: size (MB) x median latency (ms); None if unmeasured."""
        if self.latency_ms is None:
            return None
        return self.size_mb * self.latency_ms.p50


def iso_now() -> str:
    """UTC now as ``2026-11-21T23:37:53Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def label_key(model: str, accelerator: str = "cpu") -> str:
    """How (model, accelerator) is named in files, tables and ``select``: ``model@openvino``."""
    return model if accelerator == "cpu" else f"{model}@{accelerator}"


def label_path(models_dir: Path, model: str, accelerator: str = "cpu") -> Path:
    """Where the label of ``model`` on ``accelerator`` is stored: beside the model files."""
    return models_dir / f"{label_key(model, accelerator).replace(':', '-')}{LABEL_SUFFIX}"


def stored_accelerators(models_dir: Path, model: str) -> list[str]:
    """The accelerators ``model`` has a stored label for, cpu first when present."""
    found = []
    for path in sorted(models_dir.glob(f"{model}@*{LABEL_SUFFIX}")):
        try:
            label = NutritionLabel.model_validate_json(path.read_bytes())
        except (OSError, ValidationError, ValueError):
            continue
        if label.model == model:
            found.append(label.accelerator)
    return (["cpu"] if label_path(models_dir, model).exists() else []) + found


def save_label(models_dir: Path, label: NutritionLabel) -> Path:
    """Write the label atomically (a reader never sees half a file)."""
    path = label_path(models_dir, label.model, label.accelerator)
    models_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{label.model}.", suffix=".tmp", dir=models_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(label.model_dump_json(indent=2) + "\n")
        Path(tmp).chmod(0o644)  # the daemon's user reads it (mkstemp creates 0600)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def load_label(
    models_dir: Path, model: str, sha256: str | None = None, accelerator: str = "cpu"
) -> NutritionLabel | None:
    """The stored label of ``model`` on ``accelerator``; None when absent, unreadable, or for another file."""
    path = label_path(models_dir, model, accelerator)
    try:
        label = NutritionLabel.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError, ValueError) as exc:
        log.warning("label.unreadable", path=str(path), error=str(exc).splitlines()[0])
        return None
    if sha256 is not None and label.sha256 != sha256:
        log.info("label.stale", model=model, label_sha256=label.sha256, file_sha256=sha256)
        return None
    if label.accelerator != accelerator:
        log.warning("label.unreadable", path=str(path), error=f"measured on {label.accelerator}")
        return None
    return label


def static_label(resolved: ResolvedModel, runtime: str, accelerator: str = "cpu") -> NutritionLabel:
    """What is known without measuring: file, size, quantization, runtime (``measured: false``)."""
    q = read_quantization(resolved.path)
    return NutritionLabel(
        model=resolved.name,
        task=resolved.task,
        measured=False,
        file=resolved.path.name,
        sha256=resolved.sha256,
        size_bytes=resolved.path.stat().st_size,
        quantization=q.weights,
        quantization_detail=q.summary,
        runtime=runtime,
        accelerator=accelerator,
        timestamp=iso_now(),
    )


def published_label(
    resolved: ResolvedModel, runtime: str, models_dir: Path, accelerator: str = "cpu"
) -> bytes:
    """The payload the daemon publishes for a loaded model: the stored label of the
    accelerator it runs on, else the static part."""
    label = load_label(models_dir, resolved.name, resolved.sha256, accelerator)
    if label is None:
        label = static_label(resolved, runtime, accelerator)
    return json.dumps(label.model_dump(mode="json"), separators=(",", ":")).encode()
