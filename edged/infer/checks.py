"""Checks shared by the runtimes: is the file plausible, do the inputs fit."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edged.errors import ModelError
from edged.infer.base import TensorSpec


def read_header(path: Path, magic: bytes | None, *, offset: int, kind: str) -> None:
    """Fail early, naming the path, when a model file is missing, unreadable or the wrong kind."""
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except FileNotFoundError:
        raise ModelError(f"model file {path} not found") from None
    except OSError as exc:
        raise ModelError(f"model file {path} cannot be read: {exc.strerror}") from None
    if len(head) < 8:
        raise ModelError(f"{path} is not a {kind}: the file is {len(head)} bytes long")
    if magic is not None and head[offset : offset + len(magic)] != magic:
        raise ModelError(
            f"{path} is not a {kind} (no {magic.decode()} identifier at byte {offset})"
        )


def check_inputs(
    path: Path, specs: Sequence[TensorSpec], arrays: Sequence[npt.NDArray[np.generic]]
) -> None:
    """Raise ModelError naming the input whose count, shape or dtype is wrong."""
    if len(arrays) != len(specs):
        raise ModelError(f"{path}: model takes {len(specs)} inputs, got {len(arrays)}")
    for spec, array in zip(specs, arrays, strict=True):
        if array.dtype != spec.dtype:
            raise ModelError(f"{path}: input {spec.name!r} needs {spec.dtype}, got {array.dtype}")
        if len(array.shape) != len(spec.shape) or any(
            want not in (-1, got) for want, got in zip(spec.shape, array.shape, strict=True)
        ):
            raise ModelError(
                f"{path}: input {spec.name!r} needs shape {list(spec.shape)}, got {list(array.shape)}"
            )
