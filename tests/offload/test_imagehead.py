"""Image sizes read from headers alone."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.offload.imagehead import ImageHeaderError, image_size


def encoded(ext: str, w: int, h: int, *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, np.zeros((h, w, 3), np.uint8), list(params))
    assert ok
    return buf.tobytes()


class TestImageSize:
    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (encoded(".jpg", 53, 37), ("jpeg", 53, 37)),
            (encoded(".jpg", 53, 37, cv2.IMWRITE_JPEG_PROGRESSIVE, 1), ("jpeg", 53, 37)),
            (encoded(".png", 53, 37), ("png", 53, 37)),
        ],
        ids=["baseline-jpeg", "progressive-jpeg", "png"],
    )
    def test_the_size_of_an_encoded_image_is_what_the_decoder_finds(
        self, data: bytes, expected: tuple[str, int, int]
    ) -> None:
        assert image_size(data) == expected
        h, w = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
        assert (w, h) == expected[1:]

    def test_a_real_photo_with_exif_segments(self, media_dir: Path) -> None:
        data = (media_dir / "people_group.jpg").read_bytes()
        h, w = cv2.imread(str(media_dir / "people_group.jpg")).shape[:2]
        assert image_size(data) == ("jpeg", w, h)

    def test_a_jpeg_frame_header_claiming_65535_squared_is_read_as_such(self) -> None:
        data = bytearray(encoded(".jpg", 53, 37))
        sof = data.index(b"\xff\xc0")
        data[sof + 5 : sof + 9] = b"\xff\xff\xff\xff"  # height, width
        assert image_size(bytes(data)) == ("jpeg", 65535, 65535)

    @pytest.mark.parametrize(
        ("data", "problem"),
        [
            (b"GIF89a....", "not a JPEG or PNG"),
            (encoded(".jpg", 8, 8)[:20], "cut short"),
            (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIEND", "IHDR"),
            (b"\xff\xd8\xff\xda\x00\x02", "without a frame header"),
            (b"\xff\xd8\x00", "marker expected at byte 2"),
        ],
        ids=["gif", "truncated-jpeg", "png-without-ihdr", "scan-before-frame", "garbage"],
    )
    def test_what_is_not_a_sized_jpeg_or_png_is_refused_with_the_reason(
        self, data: bytes, problem: str
    ) -> None:
        with pytest.raises(ImageHeaderError, match=problem):
            image_size(data)

    def test_a_jpeg_of_zero_height_is_refused(self) -> None:
        data = bytearray(encoded(".jpg", 53, 37))
        sof = data.index(b"\xff\xc0")
        data[sof + 5 : sof + 7] = b"\x00\x00"
        with pytest.raises(ImageHeaderError, match="without a width and height"):
            image_size(bytes(data))
