"""Accelerators: which ones a runtime offers on this device, and which one a model gets.

An accelerator is named as the runtimes name them (``[[pipelines]]
accelerator``):

========== ============ ==================================================
name       runtime      what it is
========== ============ ==================================================
cpu        both         ONNX Runtime's CPU execution provider; LiteRT's
                        built-in kernels *without* its default delegates
xnnpack    litert       LiteRT's XNNPACK CPU delegate (what LiteRT applies
                        by default; named so that it can be asked for,
                        measured and compared with ``cpu``)
edgetpu    litert       Coral Edge TPU, ``load_delegate("libedgetpu.so.1")``
cuda       onnxruntime  CUDAExecutionProvider (``onnxruntime-gpu``)
tensorrt   onnxruntime  TensorrtExecutionProvider, engines cached on disk
openvino   onnxruntime  OpenVINOExecutionProvider (``onnxruntime-openvino``);
                        ``openvino:GPU`` etc. choose its device type
auto       both         the best of the above that is available and works
========== ============ ==================================================

An explicitly requested accelerator that is not installed, or that fails
when the session is created, is :class:`AcceleratorError` (a configuration
error at ``check``/``run``, naming what *is* available). ``auto`` never
fails on an accelerator: it tries the available ones best first and falls
back to the CPU, logging the choice (``infer.accelerator_chosen``) and,
once per runtime and process, a warning when the fallback is the plain CPU.
"""

from __future__ import annotations

import ctypes
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged.config.accelerators import ACCELERATORS, valid_accelerator
from edged.errors import ModelError

#: Per runtime, the accelerators it can use, best first (the order ``auto`` tries).
BY_RUNTIME: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("tensorrt", "cuda", "openvino", "cpu"),
    "litert": ("edgetpu", "xnnpack", "cpu"),
}

#: ONNX Runtime execution provider of each accelerator.
PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}

#: The Edge TPU runtime library (Coral's libedgetpu1-std / -max packages).
EDGETPU_LIBRARY = "libedgetpu.so.1"

_warned_fallback: set[str] = set()


def cache_dir(models_dir: Path) -> Path:
    """Where compiled engines (TensorRT, OpenVINO) are kept: under the models dir.

    Under systemd the models dir is inside the writable state directory
    (/var/lib/edged), and engines belong to the model files they came from.
    """
    return models_dir / "engines"


class AcceleratorError(ModelError):
    """An explicitly requested accelerator is not installed here, or fails to start.

    ``available`` lists what this runtime can use on this device, so that the
    message (and ``edged check``) can say what to write instead.
    """

    def __init__(self, message: str, available: list[str]) -> None:
        self.available = list(available)
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Choice:
    """One accelerator to try: its base name, and its option (OpenVINO's device type)."""

    name: str
    option: str = ""

    @property
    def label(self) -> str:
        """The name as written in config and labels (``openvino:GPU``)."""
        return f"{self.name}:{self.option}" if self.option else self.name


def parse(name: str) -> Choice:
    """``openvino:GPU`` → Choice("openvino", "GPU"); ModelError for an unknown name."""
    if not valid_accelerator(name):
        raise ModelError(f"unknown accelerator {name!r} (known: {', '.join(ACCELERATORS)})")
    base, _, option = name.partition(":")
    return Choice(base, option)


def onnx_providers() -> list[str]:
    """``onnxruntime.get_available_providers()``, or [] when ONNX Runtime is not installed."""
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError:
        return []
    return list(ort.get_available_providers())


def edgetpu_present() -> bool:
    """True when the Edge TPU runtime library can be loaded (Coral's libedgetpu)."""
    try:
        ctypes.CDLL(EDGETPU_LIBRARY)
    except OSError:
        return False
    return True


def available(runtime: str) -> list[str]:
    """The accelerators ``runtime`` can use on this device, best first (always ends with cpu)."""
    if runtime == "onnxruntime":
        providers = set(onnx_providers())
        return [a for a in BY_RUNTIME[runtime] if a == "cpu" or PROVIDERS[a] in providers]
    if runtime == "litert":
        return [a for a in BY_RUNTIME[runtime] if a != "edgetpu" or edgetpu_present()]
    return ["cpu"]


def describe_available(runtime: str) -> str:
    """What the error messages name as installed: accelerators, and ORT's providers."""
    names = ", ".join(available(runtime))
    if runtime == "onnxruntime":
        return (
            f"available for onnxruntime: {names} "
            f"(onnxruntime.get_available_providers() = {onnx_providers()})"
        )
    return f"available for {runtime}: {names}"


def candidates(runtime: str, requested: str, path: Path) -> list[Choice]:
    """The accelerators to try for ``path``, in order; AcceleratorError if an explicit one is absent.

    ``auto`` skips the Edge TPU for a model not compiled for it (Coral's
    compiler names its output ``*_edgetpu.tflite``): the delegate would run
    every op on the CPU anyway, without XNNPACK.
    """
    choice = parse(requested)
    supported = BY_RUNTIME.get(runtime, ("cpu",))
    here = available(runtime)
    if choice.name == "auto":
        return [
            Choice(a)
            for a in here
            if a != "edgetpu" or path.name.lower().endswith("_edgetpu.tflite")
        ]
    if choice.name not in supported:
        raise AcceleratorError(
            f"{choice.label} is not an accelerator of {runtime} (the runtime of {path.name}); "
            f"{runtime} takes: {', '.join(supported)}, auto; {describe_available(runtime)}",
            here,
        )
    if choice.name not in here:
        raise AcceleratorError(
            f"{choice.label} is not installed on this device; {describe_available(runtime)}",
            here,
        )
    return [choice]


def chosen(runtime: str, requested: str, got: str, path: Path, tried: list[str]) -> None:
    """Log the accelerator a model got; warn once per runtime when ``auto`` fell back to the CPU."""
    # Imported here: the runtime modules import this one, and they must keep
    # importing in a bare runtime venv (tflite-runtime + numpy only, as old
    # device images and tests/infer/test_tflite_legacy.py have).
    import structlog  # noqa: PLC0415

    log = structlog.get_logger(__name__)
    log.info(
        "infer.accelerator_chosen",
        model=path.name,
        runtime=runtime,
        requested=requested,
        accelerator=got,
        failed=tried or None,
    )
    if requested == "auto" and got == "cpu" and runtime not in _warned_fallback:
        _warned_fallback.add(runtime)
        log.warning(
            "infer.accelerator_fallback",
            runtime=runtime,
            accelerator="cpu",
            failed=tried or None,
            hint=f"no accelerator for {runtime} works here, models run on the CPU; "
            + describe_available(runtime),
        )


def ort_provider_options(choice: Choice, cache_dir: Path | None) -> list[Any]:
    """The ``providers`` list for an ONNX Runtime session on ``choice`` (CPU always last)."""
    cpu = "CPUExecutionProvider"
    if choice.name == "cpu":
        return [cpu]
    if choice.name == "cuda":
        return [("CUDAExecutionProvider", {}), cpu]
    if choice.name == "tensorrt":
        options: dict[str, str] = {}
        if cache_dir is not None:
            # Building an engine takes minutes on a Jetson: cache it beside the models.
            engines = cache_dir / "tensorrt"
            engines.mkdir(parents=True, exist_ok=True)
            options = {
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(engines),
                "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": str(engines),
            }
        # Nodes TensorRT cannot take run on CUDA, then on the CPU.
        return [("TensorrtExecutionProvider", options), ("CUDAExecutionProvider", {}), cpu]
    if choice.name == "openvino":
        ov: dict[str, str] = {"device_type": choice.option or "CPU"}
        if cache_dir is not None:
            blobs = cache_dir / "openvino"
            blobs.mkdir(parents=True, exist_ok=True)
            ov["cache_dir"] = str(blobs)
        return [("OpenVINOExecutionProvider", ov), cpu]
    raise ModelError(f"{choice.label} is not an ONNX Runtime execution provider")
