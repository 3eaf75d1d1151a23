"""LiteRT (TensorFlow Lite) runtime: ``ai_edge_litert`` first, ``tflite_runtime`` as fallback.

LiteRT is the primary runtime: it works with numpy 2 and was ~20x faster on
int8 models on these machines. ``tflite_runtime`` 2.14 (its last release)
only works with numpy < 2, so it is kept as a fallback for old images.
"""

from __future__ import annotations

import importlib
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edged.errors import ModelError, RuntimeUnavailableError
from edged.infer.accel import EDGETPU_LIBRARY, AcceleratorError, describe_available, parse
from edged.infer.base import TensorSpec
from edged.infer.checks import check_inputs, read_header

#: (module, distribution) in order of preference.
_CANDIDATES = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
)


def find_interpreter() -> tuple[Any, str]:
    """The Interpreter class of the first importable TFLite runtime, and its name + version."""
    errors: list[str] = []
    for module_name, dist in _CANDIDATES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            errors.append(f"{dist}: {exc}")
            continue
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "unknown"
        return module.Interpreter, f"{dist} {version}"
    raise RuntimeUnavailableError(
        "no TFLite runtime is installed (" + "; ".join(errors) + "): "
        "pip install ai-edge-litert (or the 'tflite-legacy' extra on numpy < 2 images)"
    )


def _spec(detail: dict[str, Any]) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    shape = tuple(int(d) for d in detail.get("shape_signature", detail["shape"]))
    return TensorSpec(
        name=str(detail["name"]),
        shape=shape,
        dtype=np.dtype(detail["dtype"]),
        scale=float(scale),
        zero_point=int(zero_point),
    )


def _delegate_options(interpreter_cls: Any, accelerator: str, path: Path) -> dict[str, Any]:
    """Interpreter keyword arguments that select ``accelerator``'s kernels."""
    module = sys.modules[interpreter_cls.__module__]
    resolver = getattr(module, "OpResolverType", None)
    if accelerator == "xnnpack":
        # AUTO is LiteRT's default: built-in kernels with XNNPACK applied on top.
        return {} if resolver is None else {"experimental_op_resolver_type": resolver.AUTO}
    if accelerator == "cpu":
        if resolver is None:
            raise AcceleratorError(
                f"{path.name}: this TFLite runtime cannot turn XNNPACK off, so it has no plain "
                "cpu path; use accelerator = 'xnnpack'",
                ["xnnpack"],
            )
        return {"experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    if accelerator == "edgetpu":
        try:
            delegate = module.load_delegate(EDGETPU_LIBRARY)
        except (ValueError, OSError, RuntimeError) as exc:
            raise AcceleratorError(
                f"{path.name}: the Edge TPU delegate ({EDGETPU_LIBRARY}) cannot be loaded: "
                f"{exc}; is the Coral device plugged in? " + describe_available("litert"),
                ["cpu", "xnnpack"],
            ) from None
        return {"experimental_delegates": [delegate]}
    raise AcceleratorError(
        f"{path.name}: {accelerator} is not a LiteRT accelerator (cpu, xnnpack, edgetpu)",
        ["cpu", "xnnpack"],
    )


class LiteRTModel:
    """A ``.tflite`` model, loaded and warmed up once.

    Warm-up happens here, at start, never per frame: the first ``invoke``
    allocates tensors and builds the XNNPACK plan, which is 10-100x slower
    than a steady-state call and would otherwise land on the first result.

    ``accelerator`` (resolved, never ``auto``): ``xnnpack`` is LiteRT's
    default path, its XNNPACK delegate with ``threads`` threads; ``cpu`` is
    the built-in kernels without default delegates (the reference a delegate's
    accuracy is compared with); ``edgetpu`` loads Coral's delegate library.
    """

    def __init__(
        self,
        path: Path,
        threads: int = 1,
        *,
        accelerator: str = "xnnpack",
        cache_dir: Path | None = None,  # noqa: ARG002  (the Model factory's signature; LiteRT caches nothing)
    ) -> None:
        read_header(path, b"TFL3", offset=4, kind="TFLite flatbuffer")
        interpreter_cls, self.runtime = find_interpreter()
        self.path = path
        self.threads = threads
        choice = parse(accelerator)
        self.accelerator = choice.label
        kwargs = _delegate_options(interpreter_cls, choice.name, path)
        try:
            self._it = interpreter_cls(model_path=str(path), num_threads=threads, **kwargs)
        except (SystemError, ImportError, AttributeError) as exc:
            # tflite-runtime 2.14 imports fine next to numpy 2 but its C extension
            # fails here ("_ARRAY_API not found", surfacing as SystemError): the
            # runtime is unusable on this image, whatever the model.
            raise RuntimeUnavailableError(
                f"{path}: {self.runtime} cannot create an Interpreter with numpy "
                f"{np.__version__} ({type(exc).__name__}: {exc}); install ai-edge-litert, "
                "or use numpy < 2 with tflite-runtime"
            ) from None
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: {self.runtime} cannot load it: {exc}") from None
        try:
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: {self.runtime} cannot allocate its tensors: {exc}") from None
        in_details = self._it.get_input_details()
        out_details = self._it.get_output_details()
        self._in_index = [int(d["index"]) for d in in_details]
        self._out_index = [int(d["index"]) for d in out_details]
        self.inputs = tuple(_spec(d) for d in in_details)
        self.outputs = tuple(_spec(d) for d in out_details)
        self.run([np.zeros([max(d, 1) for d in s.shape], dtype=s.dtype) for s in self.inputs])

    def run(self, inputs: list[npt.NDArray[np.generic]]) -> list[npt.NDArray[np.float32]]:
        """Invoke once; quantized outputs come back dequantized to float32."""
        if self._it is None:
            raise ModelError(f"{self.path}: the model was closed")
        check_inputs(self.path, self.inputs, inputs)
        for index, array in zip(self._in_index, inputs, strict=True):
            self._it.set_tensor(index, array)
        self._it.invoke()
        out: list[npt.NDArray[np.float32]] = []
        for index, spec in zip(self._out_index, self.outputs, strict=True):
            raw = self._it.get_tensor(index)  # a copy: the interpreter reuses its buffers
            if spec.quantized:
                out.append(
                    ((raw.astype(np.float32) - spec.zero_point) * spec.scale).astype(np.float32)
                )
            else:
                out.append(raw.astype(np.float32, copy=False))
        return out

    def close(self) -> None:
        """Drop the interpreter and its tensor arena; ``run`` refuses afterwards."""
        self._it = None
