"""The values ``[[pipelines]] accelerator`` takes, and nothing else.

A module of its own with no third-party import: :mod:`edged.infer.accel`
needs these names too, and the LiteRT runtime it serves must import on a
device image that has numpy and tflite-runtime but not pydantic (see
``tests/infer/test_tflite_legacy.py``).
"""

from __future__ import annotations

import re

#: Every value ``[[pipelines]] accelerator`` takes (``openvino`` may carry a device type).
ACCELERATORS = ("auto", "cpu", "cuda", "tensorrt", "openvino", "xnnpack", "edgetpu")

#: ``openvino:GPU``, ``openvino:GPU.1``, ``openvino:NPU``, ``openvino:AUTO:GPU,CPU``:
#: OpenVINO's device_type strings (ORT ignores a device it does not know, so
#: only these forms are accepted).
_ACCELERATOR = re.compile(
    r"^(?:auto|cpu|cuda|tensorrt|xnnpack|edgetpu|"
    r"openvino(?::(?:CPU|GPU(?:\.\d+)?|NPU|(?:AUTO|HETERO|MULTI):[A-Z0-9.,]+))?)$"
)


def valid_accelerator(name: str) -> bool:
    """True for a value ``accelerator`` accepts (:mod:`edged.infer.accel` says what each is)."""
    return _ACCELERATOR.match(name) is not None
