"""Image preprocessing: resize/letterbox, colour, layout, quantization, and the way back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.errors import ModelError
from edged.infer.base import TensorSpec
from edged.preprocess.image import ImageSpec, Letterbox, preprocess

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
    src_w=st.integers(16, 2000),
    src_h=st.integers(16, 2000),
    box=st.tuples(*[st.floats(0, 1)] * 4),
    anchor=st.sampled_from(["center", "topleft"]),
)
def test_letterbox_round_trip(
    src_w: int, src_h: int, box: tuple[float, float, float, float], anchor: str
) -> None:
    """A box mapped into the letterboxed input and back lands where it started."""
    x0, x1 = sorted((box[0], box[2]))
    y0, y1 = sorted((box[1], box[3]))
    r = min(416 / src_w, 416 / src_h)
    nw, nh = round(src_w * r), round(src_h * r)
    px = (416 - nw) // 2 if anchor == "center" else 0
    py = (416 - nh) // 2 if anchor == "center" else 0
    lb = Letterbox(src_w, src_h, 416, 416, nw / src_w, nh / src_h, float(px), float(py))
    back = lb.box_from_input_pixels(
        x0 * src_w * lb.scale_x + px,
        y0 * src_h * lb.scale_y + py,
        x1 * src_w * lb.scale_x + px,
        y1 * src_h * lb.scale_y + py,
    )
    assert np.allclose(back, (x0, y0, x1, y1), atol=1e-9)
