"""Choose a runtime for a model file, by name from an explicit table.

Runtimes are imported only when a model needs them, so a device that runs
only TFLite models never pays for importing ONNX Runtime, and a runtime that
is not installed is reported as :class:`RuntimeUnavailableError` with an
install hint instead of an ImportError at start.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edged.errors import ModelError, RuntimeUnavailableError
from edged.infer.base import Model

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


def load_model(path: Path, *, runtime: str = "auto", threads: int = 1) -> Model:
    """Load and warm up ``path`` with the chosen runtime."""
    name = runtime_for(path, runtime)
    module_name, _, cls_name = RUNTIMES[name].partition(":")
    module = importlib.import_module(module_name)
    model: Model = getattr(module, cls_name)(path, threads=threads)
    return model


def runtime_versions() -> dict[str, str]:
    """Each runtime's name and version, or why it is unavailable (for labels and ``state``)."""
    out: dict[str, str] = {}
    try:
        from edged.infer.litert import find_interpreter  # noqa: PLC0415

        out["litert"] = find_interpreter()[1]
    except RuntimeUnavailableError as exc:
        out["litert"] = f"not installed: {exc}"
    try:
        ort = importlib.import_module("onnxruntime")
        out["onnxruntime"] = f"onnxruntime {ort.__version__}"
    except ImportError as exc:
        out["onnxruntime"] = f"not installed: {exc}"
    return out
