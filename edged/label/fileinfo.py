"""What a model file says about its own quantization: the dtypes of weights and activations.

The catalog could claim "int8", but a label must say what the file *is*, so it
is read from the file:

- ONNX: a small reader of the protobuf wire format walks the graph's
  initializers (weights) and nodes. ``onnx`` is not a runtime dependency of
  edged (ONNX Runtime does not need it), and the three fields needed here
  (initializer dims + data type, node op types + inputs) are stable since ONNX
  IR version 3, so a 60-line reader beats a 15 MB dependency on a Pi.
- TFLite: the LiteRT interpreter lists every tensor and op; tensors that no
  op produces and that are not graph inputs are the constants (weights).

The *quantization* of a model is the dtype holding most of its weight
elements (``int8``, ``uint8``, ``float16`` or ``float32``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edged.errors import ModelError

#: ONNX TensorProto.DataType values → numpy-style names.
_ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    16: "bfloat16",
}
#: Dtypes that can hold a model's weights; int32/int64 tensors are biases and shapes.
_WEIGHT_KINDS = ("int8", "uint8", "float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True, slots=True)
class Quantization:
    """The dtypes found in a model file."""

    weights: str  # dominant weight dtype: "int8", "uint8", "float16", "float32", …
    activations: str  # dominant dtype of quantized activations, or "float32"
    scheme: str  # e.g. "QDQ", "tflite", "none"

    @property
    def summary(self) -> str:
        """One line for tables: ``int8 (QDQ, activations uint8)``."""
        if self.weights in ("float32", "float64"):
            return self.weights
        return f"{self.weights} ({self.scheme}, activations {self.activations})"


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value or start, end) of each field of one message."""
    i = start
    while i < end:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield field, wire, value, i
        elif wire == 2:
            length, i = _varint(buf, i)
            yield field, wire, i, i + length
            i += length
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} at byte {i}")


def _packed_varints(buf: bytes, start: int, end: int) -> list[int]:
    out, i = [], start
    while i < end:
        v, i = _varint(buf, i)
        out.append(v)
    return out


def _initializer(buf: bytes, start: int, end: int) -> tuple[str, str, int]:
    """(name, dtype, element count) of one TensorProto."""
    dims: list[int] = []
    dtype, name = "", ""
    for field, wire, s, e in _fields(buf, start, end):
        if field == 1:  # dims: packed or one varint per field
            dims += [s] if wire == 0 else _packed_varints(buf, s, e)
        elif field == 2 and wire == 0:
            dtype = _ONNX_DTYPES.get(s, f"type{s}")
        elif field == 8 and wire == 2:
            name = buf[s:e].decode("utf-8", "replace")
    return name, dtype, int(np.prod(dims)) if dims else 1


def _node(buf: bytes, start: int, end: int) -> tuple[str, list[str]]:
    """(op type, input names) of one NodeProto."""
    inputs: list[str] = []
    op = ""
    for field, wire, s, e in _fields(buf, start, end):
        if field == 1 and wire == 2:
            inputs.append(buf[s:e].decode("utf-8", "replace"))
        elif field == 4 and wire == 2:
            op = buf[s:e].decode("utf-8", "replace")
    return op, inputs


def onnx_quantization(path: Path) -> Quantization:
    """Read initializer dtypes and Q/DQ nodes from an ``.onnx`` file."""
    buf = path.read_bytes()
    weights: Counter[str] = Counter()
    init_dtype: dict[str, str] = {}
    zero_points: list[str] = []
    qdq_nodes = 0
    try:
        graph = next(
            ((s, e) for f, w, s, e in _fields(buf, 0, len(buf)) if f == 7 and w == 2), None
        )
        if graph is None:
            raise ModelError(f"{path}: no graph in this ONNX file")
        for field, wire, s, e in _fields(buf, *graph):
            if field == 5 and wire == 2:  # GraphProto.initializer
                name, dtype, count = _initializer(buf, s, e)
                init_dtype[name] = dtype
                weights[dtype] += count
            elif field == 1 and wire == 2:  # GraphProto.node
                op, inputs = _node(buf, s, e)
                qdq_nodes += op in ("QuantizeLinear", "DequantizeLinear")
                if op == "QuantizeLinear" and len(inputs) > 2:
                    zero_points.append(inputs[2])
    except (IndexError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable ONNX protobuf ({exc})") from None
    # The zero point's dtype is the activations' dtype (uint8 or int8).
    acts = Counter(init_dtype[z] for z in zero_points if init_dtype.get(z))
    return Quantization(
        weights=_dominant(weights),
        activations=acts.most_common(1)[0][0] if acts else "float32",
        scheme="QDQ" if qdq_nodes else "none",
    )


def tflite_quantization(path: Path, interpreter: Any | None = None) -> Quantization:
    """Weight and activation dtypes of a ``.tflite`` file, from LiteRT's tensor list."""
    if interpreter is None:
        from edged.infer.litert import find_interpreter  # noqa: PLC0415  (runtime imported on demand)

        cls, _ = find_interpreter()
        try:
            interpreter = cls(model_path=str(path))
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: cannot be read by LiteRT: {exc}") from None
    details = interpreter.get_tensor_details()
    inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    try:
        # Private but long-standing (TF 2.x to LiteRT 2.x); without it every
        # tensor counts, which still gives the right answer for these models.
        ops = interpreter._get_ops_details()
        produced = {int(o) for op in ops for o in op["outputs"]}
    except AttributeError:
        produced = set()
    weights: Counter[str] = Counter()
    acts: Counter[str] = Counter()
    for d in details:
        n = int(np.prod(d["shape"])) if len(d["shape"]) else 1
        kind = np.dtype(d["dtype"]).name
        if int(d["index"]) in produced or int(d["index"]) in inputs:
            acts[kind] += n
        else:
            weights[kind] += n
    quantized_acts = Counter({k: v for k, v in acts.items() if k in ("int8", "uint8", "int16")})
    return Quantization(
        weights=_dominant(weights),
        activations=quantized_acts.most_common(1)[0][0] if quantized_acts else "float32",
        scheme="tflite",
    )


def _dominant(counts: Counter[str]) -> str:
    candidates = Counter({k: v for k, v in counts.items() if k in _WEIGHT_KINDS})
    return candidates.most_common(1)[0][0] if candidates else "float32"


def read_quantization(path: Path) -> Quantization:
    """Quantization of a model file, chosen by its suffix like the runtime registry does."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return onnx_quantization(path)
    if suffix == ".tflite":
        return tflite_quantization(path)
    raise ModelError(f"{path}: cannot read quantization from a {suffix!r} file")
