"""ONNX Runtime (CPU execution provider)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edged.errors import ModelError, RuntimeUnavailableError
from edged.infer.base import TensorSpec
from edged.infer.checks import check_inputs, read_header

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def _ort() -> Any:
    try:
        import onnxruntime  # noqa: PLC0415  (optional runtime, imported on first use)
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"onnxruntime is not installed ({exc}): pip install onnxruntime"
        ) from None
    return onnxruntime


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    dtype = _DTYPES.get(arg.type)
    if dtype is None:
        raise ModelError(f"tensor {arg.name!r} has unsupported type {arg.type}")
    return TensorSpec(name=arg.name, shape=shape, dtype=np.dtype(dtype))


class OnnxModel:
    """An ``.onnx`` model in an ONNX Runtime session, loaded and warmed up once.

    Warm-up happens here, at start, never per frame: the first ``run``
    allocates the arena and picks kernels, which is far slower than a
    steady-state call. One session per pipeline; intra-op threads are the
    pipeline's ``threads`` and inter-op parallelism is off, since these small
    graphs are sequential and extra pools only contend for the Pi's cores.
    """

    def __init__(self, path: Path, threads: int = 1) -> None:
        read_header(path, None, offset=0, kind="ONNX model")
        ort = _ort()
        self.runtime = f"onnxruntime {ort.__version__}"
        self.path = path
        self.threads = threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # warnings about unused initializers are noise on devices
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001  (ORT raises its own exception types (InvalidProtobuf, Fail, ...))
            raise ModelError(f"{path}: onnxruntime cannot load it: {exc}") from None
        self.inputs = tuple(_spec(a) for a in self._session.get_inputs())
        self.outputs = tuple(_spec(a) for a in self._session.get_outputs())
        self._names = [s.name for s in self.inputs]
        self.run(
            [np.zeros([d if d > 0 else 1 for d in s.shape], dtype=s.dtype) for s in self.inputs]
        )

    def run(self, inputs: list[npt.NDArray[np.generic]]) -> list[npt.NDArray[np.float32]]:
        """Run once; outputs come back as float32."""
        if self._session is None:
            raise ModelError(f"{self.path}: the model was closed")
        check_inputs(self.path, self.inputs, inputs)
        outs = self._session.run(None, dict(zip(self._names, inputs, strict=True)))
        return [np.asarray(o).astype(np.float32, copy=False) for o in outs]

    def close(self) -> None:
        """Release the session (its arena and thread pool); ``run`` refuses afterwards."""
        self._session = None
