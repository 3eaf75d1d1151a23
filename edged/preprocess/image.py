"""Image preprocessing: resize or letterbox, colour order, layout, dtype and quantization.

One ``cv2.resize`` per frame and no per-pixel Python: on a Pi the
preprocessing budget is a millisecond or two. The pixel → tensor value
mapping is worked out once per :class:`ImageSpec` (a 256-entry table for
integer inputs, a scale and offset for float inputs), and the resized image is
written straight into the final tensor, so a frame costs one resize plus one
pass over the model input. The returned :class:`Letterbox` lets decoders map
boxes from model input pixels back to the original frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from edged.errors import ModelError
from edged.infer.base import TensorSpec
from edged.types import Box

Layout = Literal["NHWC", "NCHW"]

_PIXELS = np.arange(256, dtype=np.float64)


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

    def input_pixels_from_box(self, box: Box) -> tuple[float, float, float, float]:
        """The inverse of :meth:`box_from_input_pixels` (for crops and tests), not clipped."""
        x0, y0, x1, y1 = box
        return (
            x0 * self.src_w * self.scale_x + self.pad_x,
            y0 * self.src_h * self.scale_y + self.pad_y,
            x1 * self.src_w * self.scale_x + self.pad_x,
            y1 * self.src_h * self.scale_y + self.pad_y,
        )


def _clip(v: float) -> float:
    return min(1.0, max(0.0, v))


@dataclass(frozen=True, slots=True)
class _Mapping:
    """Pixel value → tensor value, precomputed from an :class:`ImageSpec`.

    Exactly one of three forms: ``lut`` (integer inputs: any per-pixel rule on
    uint8 is a 256-entry table, exact and one SIMD pass with ``cv2.LUT``),
    ``alpha``/``beta`` (float inputs: ``value = pixel * alpha + beta``), or
    neither (the pixel bytes themselves).
    """

    lut: npt.NDArray[np.integer[Any]] | None
    alpha: float
    beta: float
    pad: float

    @property
    def copy_only(self) -> bool:
        """No arithmetic after the (optional) table lookup: values are copied as they are."""
        return self.alpha == 1.0 and self.beta == 0.0

    @property
    def identity(self) -> bool:
        """The tensor holds the pixel values themselves."""
        return self.lut is None and self.copy_only


def _mapping(
    dtype: np.dtype[np.generic], *, mean: float, std: float, scale: float, zp: int, pad: int
) -> _Mapping:
    """Work out the value rule once: real = (pixel - mean) / std, then quantize if needed."""
    if dtype.kind == "f":
        alpha, beta = 1.0 / std, -mean / std
        return _Mapping(None, alpha, beta, pad * alpha + beta)
    if dtype.kind not in "iu":
        raise ModelError(f"image inputs of dtype {dtype} are not supported")
    info = np.iinfo(dtype)  # type: ignore[type-var]
    if scale != 0.0:
        q = np.round((_PIXELS - mean) / std / scale + zp)
    elif dtype == np.int8:
        # int8 without quantization parameters: the usual convention is the
        # pixel shifted into the signed range.
        q = _PIXELS - 128.0
    else:
        q = _PIXELS  # integer input without quantization: raw pixels
    lut = np.clip(q, info.min, info.max).astype(dtype)
    pad_value = int(lut[pad])
    # A quantization that reproduces every pixel to within one step is the
    # identity in disguise (SSD: scale 1/128, zero point 128 with
    # mean = std = 127.5 is off by at most 1 LSB, below sensor noise). Feeding
    # the bytes unchanged skips a pass per frame, as Google's own examples do.
    if (
        dtype == np.uint8
        and int(np.abs(lut.astype(np.int16) - _PIXELS.astype(np.int16)).max()) <= 1
    ):
        return _Mapping(None, 1.0, 0.0, pad)
    return _Mapping(lut, 1.0, 0.0, pad_value)


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """Everything needed to turn an RGB frame into one model input tensor.

    ``pad_value`` is a pixel value (0-255), mapped like any pixel. ``mean`` and
    ``std`` define ``real = (pixel - mean) / std``; a quantized integer input
    then gets ``q = round(real / scale + zero_point)`` clipped to its range.
    A uint8 input without quantization parameters gets the raw pixels, and a
    float input with the default mean 0 / std 1 gets raw 0-255 values.
    """

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
    _map: _Mapping = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ModelError(f"image input size must be positive, got {self.width}x{self.height}")
        if self.std == 0.0:
            raise ModelError("image preprocessing std must not be 0")
        if not 0 <= self.pad_value <= 255:
            raise ModelError(f"pad_value is a pixel value 0-255, got {self.pad_value}")
        mapping = _mapping(
            np.dtype(self.dtype),
            mean=self.mean,
            std=self.std,
            scale=self.scale,
            zp=self.zero_point,
            pad=self.pad_value,
        )
        object.__setattr__(self, "_map", mapping)

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
        """Derive the spec from a 4-D image input (NHWC or NCHW with 3 channels) plus hints."""
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
        """True when the model takes the pixel bytes themselves (no arithmetic per frame).

        That is the case for uint8 inputs without quantization parameters, and
        for quantized uint8 inputs whose quantization reproduces every pixel
        within one step, e.g. SSD's scale 1/128, zero point 128 with
        mean = std = 127.5.
        """
        return self.dtype == np.uint8 and self._map.identity

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The tensor shape :func:`preprocess` returns (batch of one)."""
        if self.layout == "NHWC":
            return (1, self.height, self.width, 3)
        return (1, 3, self.height, self.width)


def letterbox_for(src_w: int, src_h: int, spec: ImageSpec) -> Letterbox:
    """Where a ``src_w x src_h`` frame lands in ``spec``'s input (pure geometry, no pixels)."""
    if spec.resize == "stretch":
        return Letterbox(
            src_w, src_h, spec.width, spec.height, spec.width / src_w, spec.height / src_h, 0.0, 0.0
        )
    r = min(spec.width / src_w, spec.height / src_h)
    new_w = min(spec.width, max(1, round(src_w * r)))
    new_h = min(spec.height, max(1, round(src_h * r)))
    if spec.anchor == "center":
        px, py = (spec.width - new_w) // 2, (spec.height - new_h) // 2
    else:
        px, py = 0, 0
    return Letterbox(
        src_w, src_h, spec.width, spec.height, new_w / src_w, new_h / src_h, float(px), float(py)
    )


def preprocess(
    image_rgb: npt.NDArray[np.uint8], spec: ImageSpec
) -> tuple[npt.NDArray[np.generic], Letterbox]:
    """Turn an ``H x W x 3`` RGB frame into the model's input tensor (batch of one).

    The caller's frame is never written to. When the model takes the resized
    RGB bytes as they are (SSD), the tensor is a view of the resized image:
    no copy beyond the resize.
    """
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(
            f"expected an HxWx3 uint8 RGB image, got {image_rgb.shape} {image_rgb.dtype}"
        )
    src_h, src_w = image_rgb.shape[:2]
    lb = letterbox_for(src_w, src_h, spec)
    new_w, new_h = round(lb.scale_x * src_w), round(lb.scale_y * src_h)
    pixels: npt.NDArray[Any] = image_rgb
    if (new_w, new_h) != (src_w, src_h):
        pixels = cv2.resize(image_rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    m = spec._map
    mapped = m.lut.dtype if m.lut is not None else pixels.dtype
    # Direct: the (mapped) resized image already is the tensor, as for SSD.
    direct = (new_w, new_h) == (spec.width, spec.height) and spec.layout == "NHWC"
    direct = direct and m.copy_only and mapped == spec.dtype
    if direct and spec.color == "bgr":
        # Swapped while still uint8: cvtColor does not take int8 images.
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    if m.lut is not None:
        # A table lookup is exact and needs no float math; it commutes with
        # the channel order and layout, so it is done on the compact image.
        lut = m.lut
        pixels = cv2.LUT(pixels, lut) if lut.itemsize == 1 else np.take(lut, pixels)
    if direct:
        return np.ascontiguousarray(pixels)[np.newaxis], lb
    out = np.empty(spec.shape, dtype=spec.dtype)
    px, py = int(lb.pad_x), int(lb.pad_y)
    if spec.layout == "NHWC":
        _pad(out[0].transpose(2, 0, 1), (px, py, new_w, new_h), m.pad)
        src = pixels[:, :, ::-1] if spec.color == "bgr" else pixels
        _write(out[0, py : py + new_h, px : px + new_w], src, m)
    else:
        _pad(out[0], (px, py, new_w, new_h), m.pad)
        # cv2.split gives contiguous planes in one SIMD pass; each is then
        # written (and cast) into its channel of the NCHW tensor.
        planes = cv2.split(pixels)
        if spec.color == "bgr":
            planes = planes[::-1]
        for c, plane in enumerate(planes):
            _write(out[0, c, py : py + new_h, px : px + new_w], plane, m)
    return out, lb


def _pad(chw: npt.NDArray[Any], region: tuple[int, int, int, int], value: float) -> None:
    """Fill the four strips of ``chw`` (C x H x W view) around ``region`` (x, y, w, h)."""
    px, py, w, h = region
    chw[:, :py, :] = value
    chw[:, py + h :, :] = value
    chw[:, py : py + h, :px] = value
    chw[:, py : py + h, px + w :] = value


def _write(dst: npt.NDArray[np.generic], src: npt.NDArray[np.generic], m: _Mapping) -> None:
    """``dst[...] = map(src)`` in one pass, casting into ``dst``'s dtype."""
    if m.copy_only:
        np.copyto(dst, src, casting="unsafe")
        return
    np.multiply(src, np.float32(m.alpha), out=dst, casting="unsafe", dtype=np.float32)
    if m.beta != 0.0:
        np.add(dst, np.float32(m.beta), out=dst, casting="unsafe", dtype=np.float32)
