"""The interface every inference runtime implements.

A runtime module (``onnx.py``, ``litert.py``) turns a model file into an object
satisfying :class:`Model`. The rest of edged never imports a runtime directly:
it asks :mod:`edged.infer.registry`, which also reports a missing runtime as a
:class:`~edged.errors.RuntimeUnavailableError` instead of an ImportError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Shape, dtype and quantization of one model input or output, as read from the file.

    ``shape`` uses ``-1`` for dynamic dimensions. ``scale``/``zero_point`` are
    ``0.0``/``0`` when the tensor is not quantized.
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[np.generic]
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0


class Model(Protocol):
    """A loaded, warmed-up model.

    ``run`` takes one array per input, already in the input's dtype and shape,
    and returns one array per output. Quantized outputs are returned
    dequantized to float32, so decoders never deal with quantization.
    ``run`` must be safe to call from one worker thread at a time; runtimes
    release the GIL while invoking, which is why pipelines run in threads.
    """

    path: Path
    runtime: str  # e.g. "onnxruntime 1.23.2", "ai-edge-litert 2.3.0"
    accelerator: (
        str  # resolved, never "auto": "cpu", "xnnpack", "openvino", ... (edged.infer.accel)
    )
    threads: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def run(self, inputs: list[npt.NDArray[np.generic]]) -> list[npt.NDArray[np.float32]]: ...

    def close(self) -> None: ...
