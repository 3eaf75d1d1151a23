"""Image preprocessing: resize/letterbox, colour, layout, quantization, and the way back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.errors import ModelError
from edged.infer.base import TensorSpec
from edged.preprocess.image import ImageSpec, letterbox_for, preprocess

U8 = np.dtype(np.uint8)
F32 = np.dtype(np.float32)


def frame(h: int = 480, w: int = 640) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_ssd_quantization_feeds_raw_pixels() -> None:
    """uint8 input with scale 1/128, zero point 128 and mean=std=127.5 takes the pixels as they are."""
    spec = ImageSpec.from_tensor(
        TensorSpec("in", (1, 300, 300, 3), U8, 0.0078125, 128), mean=127.5, std=127.5
    )
    assert spec.raw_pixels
    img = np.full((300, 300, 3), 77, np.uint8)
    tensor, _ = preprocess(img, spec)
    assert tensor.dtype == np.uint8
    assert (tensor == 77).all()


def test_int8_quantization_is_applied() -> None:
    """An int8 input gets q = round(real / scale + zero_point), clipped to the dtype range."""
    spec = ImageSpec.from_tensor(TensorSpec("in", (1, 8, 8, 3), np.dtype(np.int8), 1 / 255, -128))
    tensor, _ = preprocess(np.full((8, 8, 3), 255, np.uint8), spec)
    assert tensor.dtype == np.int8
    assert (tensor == 127).all()


def test_yolox_letterbox_topleft_bgr_nchw_float() -> None:
    """YOLOX: BGR, raw 0-255 floats, NCHW, pasted at the top-left of a 114-filled square."""
    spec = ImageSpec.from_tensor(
        TensorSpec("images", (1, 3, 416, 416), F32),
        color="bgr",
        resize="letterbox",
        anchor="topleft",
        pad_value=114,
    )
    img = np.zeros((208, 416, 3), np.uint8)
    img[..., 0] = 200  # red
    tensor, lb = preprocess(img, spec)
    assert tensor.shape == (1, 3, 416, 416)
    assert tensor.dtype == np.float32
    assert tensor[0, 2, 0, 0] == 200.0  # red is the last channel in BGR
    assert tensor[0, 0, 0, 0] == 0.0
    assert tensor[0, 0, 300, 0] == 114.0  # padding below the image
    assert (lb.scale_x, lb.pad_x, lb.pad_y) == (1.0, 0.0, 0.0)


def test_center_letterbox_pads_both_sides() -> None:
    """A centred letterbox splits the padding and records the offset."""
    spec = ImageSpec.from_tensor(
        TensorSpec("in", (1, 100, 100, 3), U8), resize="letterbox", anchor="center"
    )
    _, lb = preprocess(frame(50, 100), spec)
    assert (lb.pad_x, lb.pad_y) == (0.0, 25.0)


def test_non_image_input_is_refused() -> None:
    """A tensor without a 3-channel axis cannot be an image input."""
    with pytest.raises(ModelError, match="no 3-channel axis"):
        ImageSpec.from_tensor(TensorSpec("wave", (1, 15600, 1, 1), F32))


@given(
    src=st.tuples(st.integers(1, 4000), st.integers(1, 4000)),
    size=st.tuples(st.integers(8, 640), st.integers(8, 640)),
    box=st.tuples(*[st.floats(0, 1)] * 4),
    resize=st.sampled_from(["stretch", "letterbox"]),
    anchor=st.sampled_from(["center", "topleft"]),
)
def test_letterbox_round_trip(
    src: tuple[int, int],
    size: tuple[int, int],
    box: tuple[float, float, float, float],
    resize: str,
    anchor: str,
) -> None:
    """A frame box mapped into the model input by the production geometry and back is unchanged."""
    x0, x1 = sorted((box[0], box[2]))
    y0, y1 = sorted((box[1], box[3]))
    spec = ImageSpec.from_tensor(
        TensorSpec("in", (1, size[1], size[0], 3), U8),
        resize=resize,  # type: ignore[arg-type]
        anchor=anchor,  # type: ignore[arg-type]
    )
    lb = letterbox_for(src[0], src[1], spec)
    in_px = lb.input_pixels_from_box((x0, y0, x1, y1))
    assert 0 <= in_px[0] <= in_px[2] <= lb.in_w + 1e-9
    assert 0 <= in_px[1] <= in_px[3] <= lb.in_h + 1e-9
    back = lb.box_from_input_pixels(*in_px)
    assert np.allclose(back, (x0, y0, x1, y1), atol=1e-9)


def reference_preprocess(image: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """The value rule written out plainly in float64 (slow, obviously right)."""
    lb = letterbox_for(image.shape[1], image.shape[0], spec)
    w, h = round(lb.scale_x * image.shape[1]), round(lb.scale_y * image.shape[0])
    resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((spec.height, spec.width, 3), spec.pad_value, np.float64)
    px, py = int(lb.pad_x), int(lb.pad_y)
    canvas[py : py + h, px : px + w] = resized
    if spec.color == "bgr":
        canvas = canvas[:, :, ::-1]
    if spec.dtype.kind == "f":
        values = (canvas - spec.mean) / spec.std
    elif spec.scale:
        info = np.iinfo(spec.dtype)
        values = (canvas - spec.mean) / spec.std / spec.scale + spec.zero_point
        values = np.clip(np.round(values), info.min, info.max)
    elif spec.dtype == np.int8:
        values = canvas - 128
    else:
        values = canvas
    if spec.layout == "NCHW":
        values = values.transpose(2, 0, 1)
    return values[np.newaxis]


@settings(max_examples=60, deadline=None)
@given(
    src=st.tuples(st.integers(1, 96), st.integers(1, 96)),
    size=st.tuples(st.integers(4, 64), st.integers(4, 64)),
    layout=st.sampled_from(["NHWC", "NCHW"]),
    kind=st.sampled_from(["u8", "u8-quant", "i8-quant", "i8", "f32", "f32-norm"]),
    color=st.sampled_from(["rgb", "bgr"]),
    resize=st.sampled_from(["stretch", "letterbox"]),
    anchor=st.sampled_from(["center", "topleft"]),
    pad=st.integers(0, 255),
    seed=st.integers(0, 2**16),
)
def test_preprocess_matches_the_plain_value_rule(
    src: tuple[int, int],
    size: tuple[int, int],
    layout: str,
    kind: str,
    color: str,
    resize: str,
    anchor: str,
    pad: int,
    seed: int,
) -> None:
    """The fast path gives the same tensor as the value rule computed naively in float64."""
    dtype, scale, zp, mean, std = {
        "u8": (U8, 0.0, 0, 0.0, 1.0),
        "u8-quant": (U8, 0.02, 3, 10.0, 2.0),
        "i8-quant": (np.dtype(np.int8), 1 / 255, -128, 0.0, 1.0),
        "i8": (np.dtype(np.int8), 0.0, 0, 0.0, 1.0),
        "f32": (F32, 0.0, 0, 0.0, 1.0),
        "f32-norm": (F32, 0.0, 0, 127.5, 58.4),
    }[kind]
    w, h = size
    shape = (1, h, w, 3) if layout == "NHWC" else (1, 3, h, w)
    spec = ImageSpec.from_tensor(
        TensorSpec("in", shape, dtype, scale, zp),
        color=color,  # type: ignore[arg-type]
        resize=resize,  # type: ignore[arg-type]
        anchor=anchor,  # type: ignore[arg-type]
        pad_value=pad,
        mean=mean,
        std=std,
    )
    image = np.random.default_rng(seed).integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
    tensor, _ = preprocess(image, spec)
    assert tensor.shape == shape
    assert tensor.dtype == dtype
    assert tensor.flags.c_contiguous
    expected = reference_preprocess(image, spec)
    assert np.allclose(tensor.astype(np.float64), expected, rtol=1e-6, atol=1e-5)


def test_near_identity_quantization_is_within_one_step() -> None:
    """SSD's 'raw pixels' shortcut differs from exact quantization by at most one step."""
    spec = ImageSpec.from_tensor(
        TensorSpec("in", (1, 16, 16, 3), U8, 0.0078125, 128), mean=127.5, std=127.5
    )
    image = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    tensor, _ = preprocess(image, spec)
    exact = np.clip(np.round((image - 127.5) / 127.5 / 0.0078125 + 128), 0, 255)
    assert np.abs(tensor[0].astype(np.int16) - exact).max() == 1


def test_normalized_padding_is_normalized_too() -> None:
    """The letterbox fill goes through the same mean/std as the pixels."""
    spec = ImageSpec.from_tensor(
        TensorSpec("in", (1, 3, 8, 8), F32),
        resize="letterbox",
        anchor="topleft",
        pad_value=114,
        mean=127.5,
        std=127.5,
    )
    tensor, lb = preprocess(np.zeros((4, 8, 3), np.uint8), spec)
    assert lb.pad_y == 0.0
    assert tensor[0, :, 4:, :] == pytest.approx((114 - 127.5) / 127.5)
    assert tensor[0, :, :4, :] == pytest.approx(-1.0)


def test_frame_is_not_written_to() -> None:
    """Preprocessing leaves the caller's frame untouched (one capture feeds many pipelines)."""
    image = frame(300, 300)
    before = image.copy()
    image.flags.writeable = False
    spec = ImageSpec.from_tensor(
        TensorSpec("in", (1, 300, 300, 3), U8, 0.0078125, 128), mean=127.5, std=127.5
    )
    preprocess(image, spec)
    assert np.array_equal(image, before)
