"""Image preprocessing: resize or letterbox, colour order, layout, dtype and quantization.

One ``cv2.resize`` per frame and no per-pixel Python: on a Pi the
preprocessing budget is a millisecond or two. The returned :class:`Letterbox`
lets decoders map boxes from model input pixels back to the original frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from edged.errors import ModelError
from edged.infer.base import TensorSpec
from edged.types import Box

Layout = Literal["NHWC", "NCHW"]


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a ``src_w x src_h`` frame was placed into an ``in_w x in_h`` model input.

    Input pixel ``(x, y)`` corresponds to source pixel
    ``((x - pad_x) / scale_x, (y - pad_y) / scale_y)``.
    """

    src_w: int
    src_h: int
    in_w: int
    in_h: int
    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def point_from_input_pixels(self, x: float, y: float) -> tuple[float, float]:
        """An input-pixel point as normalized (x, y) in the original frame (not clipped)."""
        return (
            (x - self.pad_x) / self.scale_x / self.src_w,
            (y - self.pad_y) / self.scale_y / self.src_h,
        )

    def box_from_input_pixels(self, x0: float, y0: float, x1: float, y1: float) -> Box:
        """An input-pixel box as a normalized box in the original frame, clipped to [0, 1]."""
        nx0, ny0 = self.point_from_input_pixels(x0, y0)
        nx1, ny1 = self.point_from_input_pixels(x1, y1)
        return (_clip(nx0), _clip(ny0), _clip(nx1), _clip(ny1))

    def box_from_input_normalized(self, x0: float, y0: float, x1: float, y1: float) -> Box:
        """A box normalized to the model input as a normalized box in the original frame."""
        return self.box_from_input_pixels(
            x0 * self.in_w, y0 * self.in_h, x1 * self.in_w, y1 * self.in_h
        )


def _clip(v: float) -> float:
    return min(1.0, max(0.0, v))


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """Everything needed to turn an RGB frame into one model input tensor."""

    width: int
    height: int
    layout: Layout
    color: Literal["rgb", "bgr"]
    resize: Literal["stretch", "letterbox"]
    anchor: Literal["topleft", "center"]
    pad_value: int
    dtype: np.dtype[np.generic]
    mean: float
    std: float
    scale: float
    zero_point: int

    @classmethod
    def from_tensor(
        cls,
        spec: TensorSpec,
        *,
        color: Literal["rgb", "bgr"] = "rgb",
        resize: Literal["stretch", "letterbox"] = "stretch",
        anchor: Literal["topleft", "center"] = "center",
        pad_value: int = 0,
        mean: float = 0.0,
        std: float = 1.0,
    ) -> ImageSpec:
        """Derive the spec from a 4-D image input (NHWC or NCHW with 3 channels)."""
        shape = spec.shape
        if len(shape) != 4 or shape[0] not in (1, -1):
            raise ModelError(
                f"input {spec.name!r} has shape {list(shape)}: not a single-image input"
            )
        if shape[3] == 3:
            layout: Layout = "NHWC"
            h, w = shape[1], shape[2]
        elif shape[1] == 3:
            layout = "NCHW"
            h, w = shape[2], shape[3]
        else:
            raise ModelError(f"input {spec.name!r} has shape {list(shape)}: no 3-channel axis")
        if h <= 0 or w <= 0:
            raise ModelError(
                f"input {spec.name!r} has dynamic size {list(shape)}: give it a fixed size"
            )
        return cls(
            width=w,
            height=h,
            layout=layout,
            color=color,
            resize=resize,
            anchor=anchor,
            pad_value=pad_value,
            dtype=spec.dtype,
            mean=mean,
            std=std,
            scale=spec.scale,
            zero_point=spec.zero_point,
        )

    @property
    def raw_pixels(self) -> bool:
        """True when the model takes the pixel bytes themselves (no arithmetic needed).

        That is the case for uint8 inputs without quantization parameters, and
        for quantized uint8 inputs whose mapping real = (q - zp) * scale is the
        same as the normalization real = (pixel - mean) / std — e.g. SSD's
        scale 1/128, zero point 128 with mean = std = 127.5, within 1 LSB.
        """
        if self.dtype != np.uint8:
            return False
        if self.scale == 0.0:
            return True
        return abs(self.scale * self.std - 1.0) < 0.01 and abs(self.zero_point - self.mean) <= 1.0


def _place(
    image: npt.NDArray[np.uint8], spec: ImageSpec
) -> tuple[npt.NDArray[np.uint8], Letterbox]:
    src_h, src_w = image.shape[:2]
    if spec.resize == "stretch":
        resized = cv2.resize(image, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
        lb = Letterbox(
            src_w, src_h, spec.width, spec.height, spec.width / src_w, spec.height / src_h, 0.0, 0.0
        )
        return np.asarray(resized, dtype=np.uint8), lb
    r = min(spec.width / src_w, spec.height / src_h)
    new_w, new_h = max(1, round(src_w * r)), max(1, round(src_h * r))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((spec.height, spec.width, 3), spec.pad_value, dtype=np.uint8)
    if spec.anchor == "center":
        px, py = (spec.width - new_w) // 2, (spec.height - new_h) // 2
    else:
        px, py = 0, 0
    canvas[py : py + new_h, px : px + new_w] = resized
    sx, sy = new_w / src_w, new_h / src_h
    return canvas, Letterbox(src_w, src_h, spec.width, spec.height, sx, sy, float(px), float(py))


def preprocess(
    image_rgb: npt.NDArray[np.uint8], spec: ImageSpec
) -> tuple[npt.NDArray[np.generic], Letterbox]:
    """Turn an ``H x W x 3`` RGB frame into the model's input tensor (batch of one)."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(
            f"expected an HxWx3 uint8 RGB image, got {image_rgb.shape} {image_rgb.dtype}"
        )
    placed, lb = _place(image_rgb, spec)
    if spec.color == "bgr":
        placed = placed[:, :, ::-1]
    tensor: npt.NDArray[np.generic]
    if spec.raw_pixels:
        tensor = placed
    elif spec.scale != 0.0:
        real = (placed.astype(np.float32) - spec.mean) / spec.std
        info = np.iinfo(spec.dtype)  # type: ignore[type-var]
        q = np.round(real / spec.scale + spec.zero_point)
        tensor = np.clip(q, info.min, info.max).astype(spec.dtype)
    elif spec.dtype == np.int8:
        tensor = (placed.astype(np.int16) - 128).astype(np.int8)
    else:
        real = placed.astype(np.float32)
        if spec.mean != 0.0 or spec.std != 1.0:
            real = (real - spec.mean) / spec.std
        tensor = real.astype(spec.dtype, copy=False)
    if spec.layout == "NCHW":
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor[np.newaxis]), lb
