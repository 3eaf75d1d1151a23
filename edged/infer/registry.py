"""Choose a runtime for a model file, by name from an explicit table.

Runtimes are imported only when a model needs them, so a device that runs
only TFLite models never pays for importing ONNX Runtime, and a runtime that
is not installed is reported as :class:`RuntimeUnavailableError` with an
install hint instead of an ImportError at start.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import structlog

from edged.errors import ModelError
from edged.infer import accel
from edged.infer.accel import AcceleratorError
from edged.infer.base import Model

log = structlog.get_logger(__name__)

#: runtime name → "module:class"
RUNTIMES: dict[str, str] = {
    "onnxruntime": "edged.infer.onnx:OnnxModel",
    "litert": "edged.infer.litert:LiteRTModel",
}

#: file suffix → runtime name, for runtime = "auto"
BY_SUFFIX: dict[str, str] = {".onnx": "onnxruntime", ".tflite": "litert"}


def runtime_for(path: Path, runtime: str = "auto") -> str:
    """The runtime name for ``path``; ModelError for an unknown suffix or name."""
    if runtime == "auto":
        try:
            return BY_SUFFIX[path.suffix.lower()]
        except KeyError:
            known = ", ".join(sorted(BY_SUFFIX))
            raise ModelError(
                f"{path}: cannot tell the runtime from suffix {path.suffix!r} (known: {known})"
            ) from None
    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime {runtime!r} (known: {', '.join(sorted(RUNTIMES))})")
    return runtime


def load_model(
    path: Path,
    *,
    runtime: str = "auto",
    threads: int = 1,
    accelerator: str = "auto",
    cache_dir: Path | None = None,
) -> Model:
    """Load and warm up ``path`` with the chosen runtime on the chosen accelerator.

    This is the one factory of a Model for (file, runtime, accelerator): the
    daemon's pipelines, ``edged check``, the bench and the cloud server all
    load through it. An explicit ``accelerator`` that is absent or fails is an
    :class:`AcceleratorError`; ``auto`` tries the available ones best first
    and ends on the CPU (see :mod:`edged.infer.accel`). ``cache_dir`` keeps
    compiled engines (TensorRT, OpenVINO) between starts.
    """
    name = runtime_for(path, runtime)
    module_name, _, cls_name = RUNTIMES[name].partition(":")
    module = importlib.import_module(module_name)
    factory = getattr(module, cls_name)
    failed: list[str] = []
    choices = accel.candidates(name, accelerator, path)
    for i, choice in enumerate(choices):
        try:
            model: Model = factory(
                path, threads=threads, accelerator=choice.label, cache_dir=cache_dir
            )
        except AcceleratorError as exc:
            if accelerator != "auto" or i == len(choices) - 1:
                raise
            # auto: a provider that is installed but does not work here (no GPU,
            # no driver) is skipped, and the reason is kept for the log.
            failed.append(f"{choice.label}: {exc}")
            log.info("infer.accelerator_failed", model=path.name, accelerator=choice.label,
                     error=str(exc))  # fmt: skip
            continue
        accel.chosen(name, accelerator, model.accelerator, path, failed)
        return model
    raise AcceleratorError(f"{path.name}: no accelerator of {name} works here", [])
