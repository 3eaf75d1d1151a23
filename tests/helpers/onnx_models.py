"""Small deterministic ONNX models built with ``onnx.helper`` for decoder tests.

No permissively licensed YOLOv8 weights exist here, so the v8 output layout is
tested with a model whose output is a known constant: byte-identical on
every rebuild, so a failing test always means the decoder changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def yolov8_output(
    boxes: Sequence[tuple[float, float, float, float, int, float]], num_classes: int, anchors: int
) -> np.ndarray:
    """A ``[1, 4 + C, N]`` output holding ``(cx, cy, w, h, class_id, score)`` in its first anchors."""
    out = np.zeros((1, 4 + num_classes, anchors), dtype=np.float32)
    out[0, 2:4, :] = 1.0  # empty anchors: 1x1 px boxes with all scores 0
    for i, (cx, cy, w, h, cid, score) in enumerate(boxes):
        out[0, :4, i] = (cx, cy, w, h)
        out[0, 4 + cid, i] = score
    return out


def build_yolov8_model(
    path: Path,
    boxes: Sequence[tuple[float, float, float, float, int, float]],
    *,
    num_classes: int = 80,
    anchors: int = 64,
    size: int = 64,
) -> Path:
    """Write a model with input ``images [1,3,size,size]`` and output ``output0 [1,4+C,N]``.

    The output is the constant from :func:`yolov8_output` plus
    ``0 * mean(images)``, so the graph really consumes its input.
    """
    const = yolov8_output(boxes, num_classes, anchors)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[0, 1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["table", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "yolov8-layout",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(const.shape))],
        initializer=[
            numpy_helper.from_array(const, "table"),
            numpy_helper.from_array(np.zeros((1,), dtype=np.float32), "zero"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edged-tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path
