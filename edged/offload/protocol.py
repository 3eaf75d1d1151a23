"""The cloud protocol (docs/cloud-protocol.md): one JSON request, one JSON answer.

Both sides import these models, so the device and the reference server cannot
disagree on a field. Version 1:

- ``GET /health`` → :class:`Health` (bearer token required, so that a device
  learns from its probe that its token is wrong, before it sends a frame);
- ``POST /v1/detect`` with :class:`DetectRequest` → :class:`DetectResponse`;
- any error → :class:`ErrorBody` with a 4xx/5xx status.

JSON with the JPEG in base64 rather than multipart: one parser on each side,
a body whose size is known before it is sent (the budget counts it), and no
multipart parser — a classic source of server bugs — on the cloud side. The
base64 overhead (a third) on a 20-60 kB JPEG is small next to the frames the
policy does not send at all.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edged.publish.payloads import DetectionItem, ModelRef, Name, NormBox, Timing

PROTOCOL_VERSION: Final = 1
HEALTH_PATH: Final = "/health"
DETECT_PATH: Final = "/v1/detect"
JSON: Final = "application/json"
#: Longest label (and model name) a device accepts in an answer, characters. The
#: device republishes answers over MQTT: a server must not be able to make it
#: publish 100 kB labels (the request's labels have the same bound).
MAX_LABEL_CHARS: Final = 128
#: Most detections a device accepts in one answer.
MAX_DETECTIONS: Final = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FrameSize(_Strict):
    """Size of the original frame, px (the crop box is relative to it)."""

    w: int = Field(gt=0)
    h: int = Field(gt=0)


class DetectRequest(_Strict):
    """Body of ``POST /v1/detect``."""

    v: Literal[1] = PROTOCOL_VERSION
    device: Name
    pipeline: Name
    ref: str = Field(min_length=1, max_length=64, description="id of the local result.")
    frame: FrameSize
    crop: NormBox = Field(description="The region of the original frame the image shows.")
    labels: list[Annotated[str, Field(max_length=MAX_LABEL_CHARS)]] = Field(
        default_factory=list, max_length=1000, description="Labels of interest; empty: all."
    )
    threshold: float = Field(ge=0.0, le=1.0, description="Lowest score to report.")
    image: str = Field(description="The JPEG, base64 (standard alphabet, padded).")


class DetectResponse(_Strict):
    """Answer of ``POST /v1/detect``: detections with boxes in the ORIGINAL frame."""

    v: Literal[1] = PROTOCOL_VERSION
    ref: str = Field(description="The request's ref, echoed.")
    model: ModelRef
    timing_ms: Timing
    detections: list[DetectionItem] = Field(max_length=MAX_DETECTIONS)

    @field_validator("model")
    @classmethod
    def _short_model_name(cls, v: ModelRef) -> ModelRef:
        if len(v.name) > MAX_LABEL_CHARS:
            raise ValueError(f"model.name of {len(v.name)} characters (max {MAX_LABEL_CHARS})")
        return v

    @field_validator("detections")
    @classmethod
    def _short_labels(cls, v: list[DetectionItem]) -> list[DetectionItem]:
        # Refused, not truncated: a label cut short is a different label.
        for i, d in enumerate(v):
            if len(d.label) > MAX_LABEL_CHARS:
                raise ValueError(
                    f"detections[{i}].label of {len(d.label)} characters (max {MAX_LABEL_CHARS})"
                )
        return v


class Health(_Strict):
    """Answer of ``GET /health``."""

    v: Literal[1] = PROTOCOL_VERSION
    status: Literal["ok"] = "ok"
    model: ModelRef


class ErrorDetail(_Strict):
    """What went wrong, for a human and a program."""

    code: str = Field(description="e.g. 'unauthorized', 'too_large', 'bad_request'.")
    message: str


class ErrorBody(_Strict):
    """Body of every 4xx/5xx answer."""

    error: ErrorDetail


def crop_to_frame(
    box: tuple[float, float, float, float], crop: tuple[float, float, float, float]
) -> tuple[float, float, float, float]:
    """Map a box normalized to the crop image into the original frame's normalized coordinates."""
    cx0, cy0, cx1, cy1 = crop
    w, h = cx1 - cx0, cy1 - cy0
    x0, y0, x1, y1 = box
    return (cx0 + x0 * w, cy0 + y0 * h, cx0 + x1 * w, cy0 + y1 * h)
