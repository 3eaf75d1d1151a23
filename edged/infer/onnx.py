"""ONNX Runtime, on the CPU or an execution provider (see :mod:`edged.infer.accel`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edged.errors import ModelError, RuntimeUnavailableError
from edged.infer.accel import (
    PROVIDERS,
    AcceleratorError,
    available,
    describe_available,
    ort_provider_options,
    parse,
)
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

    ``accelerator`` is one resolved name (``cpu``, ``cuda``, ``tensorrt``,
    ``openvino[:DEVICE]``), never ``auto``: :func:`edged.infer.registry.load_model`
    walks the choices. A provider that fails to create the session, or that
    ONNX Runtime silently replaced by the CPU, is an :class:`AcceleratorError`.
    ``cache_dir`` holds TensorRT engines and OpenVINO blobs between starts.
    """

    def __init__(
        self,
        path: Path,
        threads: int = 1,
        *,
        accelerator: str = "cpu",
        cache_dir: Path | None = None,
    ) -> None:
        read_header(path, None, offset=0, kind="ONNX model")
        ort = _ort()
        self.runtime = f"onnxruntime {ort.__version__}"
        self.path = path
        self.threads = threads
        choice = parse(accelerator)
        self.accelerator = choice.label
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # warnings about unused initializers are noise on devices
        try:
            providers = ort_provider_options(choice, cache_dir)
        except OSError as exc:
            raise AcceleratorError(
                f"{path.name}: {choice.label}: cannot create its cache dir: {exc}",
                [choice.label],
            ) from None
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=providers
            )
        except Exception as exc:  # noqa: BLE001  (ORT raises its own exception types (InvalidProtobuf, Fail, ...))
            if choice.name != "cpu":
                raise AcceleratorError(
                    f"{path.name}: the {PROVIDERS[choice.name]} failed to create a session: "
                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}; "
                    + describe_available("onnxruntime"),
                    available("onnxruntime"),
                ) from None
            raise ModelError(f"{path}: onnxruntime cannot load it: {exc}") from None
        got = self._session.get_providers()
        if choice.name != "cpu" and (not got or got[0] != PROVIDERS[choice.name]):
            # ORT falls back to the CPU when a provider's libraries are missing
            # (CUDA/TensorRT without their shared objects): a model asked to run
            # on a GPU must not run on the CPU unnoticed.
            raise AcceleratorError(
                f"{path.name}: the {PROVIDERS[choice.name]} ({choice.label}) failed at session "
                f"creation and onnxruntime fell back to {got} (its log above says why); "
                + describe_available("onnxruntime"),
                available("onnxruntime"),
            )
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
