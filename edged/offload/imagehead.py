"""The size of a JPEG or PNG from its header bytes alone, without decoding it.

A decoder allocates width x height x 3 bytes before it reads any pixel data,
and both formats compress a uniform image about a thousandfold: a 1.56 MB
PNG once made ``edged cloud serve`` allocate 2.49 GB. The server therefore
reads the size from the header here — PNG's IHDR chunk, JPEG's first
start-of-frame marker, the very fields the decoders size their buffers from —
and refuses the image before it is decoded if it is too large.
"""

from __future__ import annotations

from typing import Final, Literal

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
#: Start-of-frame markers SOF0-SOF15; C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: Markers without a length field: TEM and RST0-RST7 (SOI is read before the loop).
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})

Format = Literal["jpeg", "png"]


class ImageHeaderError(ValueError):
    """The bytes are not a JPEG or PNG whose size can be read from its header."""


def image_size(data: bytes) -> tuple[Format, int, int]:
    """``(format, width, height)`` of a JPEG or PNG, read from its header; ImageHeaderError else."""
    if data.startswith(PNG_SIGNATURE):
        return "png", *_png_size(data)
    if data.startswith(b"\xff\xd8"):
        return "jpeg", *_jpeg_size(data)
    raise ImageHeaderError("not a JPEG or PNG")


def _png_size(data: bytes) -> tuple[int, int]:
    # The first chunk must be IHDR: length 13, type, width, height (big-endian).
    ihdr = data[8:24]
    if len(ihdr) < 16 or ihdr[4:8] != b"IHDR":
        raise ImageHeaderError("PNG without an IHDR chunk first")
    width, height = int.from_bytes(ihdr[8:12], "big"), int.from_bytes(ihdr[12:16], "big")
    if width == 0 or height == 0:
        raise ImageHeaderError("PNG of zero width or height")
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2  # past SOI
    while pos < len(data):
        if data[pos] != 0xFF:
            raise ImageHeaderError(f"JPEG marker expected at byte {pos}")
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes may precede a marker
            pos += 1
        if pos >= len(data):
            break
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # EOI or start of scan before any frame header
            raise ImageHeaderError("JPEG without a frame header before its image data")
        if pos + 2 > len(data):
            break
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2:
            raise ImageHeaderError(f"JPEG segment of length {length} at byte {pos}")
        if marker in _SOF:
            # Segment: length(2) precision(1) height(2) width(2) components(1)…
            if pos + 7 > len(data):
                break
            height = int.from_bytes(data[pos + 3 : pos + 5], "big")
            width = int.from_bytes(data[pos + 5 : pos + 7], "big")
            if width == 0 or height == 0:  # height 0: defined later by a DNL marker
                raise ImageHeaderError("JPEG frame header without a width and height")
            return width, height
        pos += length
    raise ImageHeaderError("JPEG cut short before its frame header")
