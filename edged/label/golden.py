"""Golden sets: small TOML files listing media and what a good model should find in them.

A golden set names its task and lists items; each item is one media file,
given *relative to the media dir* (``--media DIR``, ``EDGED_MEDIA_DIR``, or
the sample media shipped in ``models/media``), never by absolute path, so the
same file works on every device and in CI::

    name = "coco-photos"
    task = "detection"
    labels = ["person", "dog", "cup"]   # labels evaluated; other labels are ignored
    threshold = 0.5                     # score threshold (the pipeline default)
    iou = 0.5                           # a detection matches a box at IoU >= this

    [[item]]
    media = "pets.jpg"
    boxes = [{ label = "dog", box = [0.21, 0.02, 0.50, 0.68] }]

    [[item]]
    media = "rocket.jpg"                # no boxes: a negative for every evaluated label

Every item is *exhaustive* for the evaluated labels: an object of an
evaluated label without a box counts as a false positive when found.

Pose items give reference keypoints as a CSV in the media dir (Coral's
``pose_id,pose_score,keypoint_id,keypoint_score,keypoint_x,keypoint_y``
layout, normalized x/y) or say ``person = false``. Audio items give the
``expect``-ed class name. Shipped sets live in ``models/golden/``.
"""

from __future__ import annotations

import csv
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edged.catalog.catalog import data_dir, default_catalog_path
from edged.errors import EdgedError
from edged.types import Box


class GoldenError(EdgedError):
    """A golden set is invalid, or its media cannot be found."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpectedBox(_Strict):
    """One object that must be found: its label and normalized ``[x0, y0, x1, y1]`` box."""

    label: str
    box: Box

    @model_validator(mode="after")
    def _ordered(self) -> ExpectedBox:
        x0, y0, x1, y1 = self.box
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise ValueError(f"box {list(self.box)} is not a normalized [x0, y0, x1, y1]")
        return self


class GoldenItem(_Strict):
    """One media file and what is expected in it."""

    media: str = Field(description="Path relative to the media dir.")
    boxes: list[ExpectedBox] = Field(default_factory=list)
    keypoints_csv: str = Field("", description="Pose: reference keypoints, relative to media.")
    person: bool | None = Field(None, description="Pose: is a person in the picture?")
    expect: str = Field("", description="Audio: the class a good model puts first.")
    note: str = ""

    @model_validator(mode="after")
    def _relative(self) -> GoldenItem:
        for ref in (self.media, self.keypoints_csv):
            p = PurePosixPath(ref)
            if ref and (p.is_absolute() or ".." in p.parts or "\\" in ref):
                raise ValueError(
                    f"{ref!r}: media are named relative to the media dir, never by absolute path"
                )
        return self


class GoldenSet(_Strict):
    """A named list of items for one task, with the settings its metrics use."""

    name: str
    task: Literal["detection", "pose", "audio"]
    description: str = ""
    labels: list[str] = Field(default_factory=list, description="Detection: labels evaluated.")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="Score threshold applied.")
    iou: float = Field(0.5, gt=0.0, le=1.0, description="Detection: IoU for a match.")
    pck_alpha: float = Field(0.05, gt=0.0, le=1.0, description="Pose: PCK distance factor.")
    items: list[GoldenItem] = Field(alias="item", min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> GoldenSet:
        if self.task == "detection":
            if not self.labels:
                raise ValueError("a detection golden set lists the 'labels' it evaluates")
            for item in self.items:
                for b in item.boxes:
                    if b.label not in self.labels:
                        raise ValueError(
                            f"{item.media}: box label {b.label!r} is not in labels {self.labels}"
                        )
        if self.task == "audio":
            missing = [i.media for i in self.items if not i.expect]
            if missing:
                raise ValueError(f"audio items need 'expect': {', '.join(missing)}")
        if self.task == "pose":
            vague = [i.media for i in self.items if not i.keypoints_csv and i.person is None]
            if vague:
                raise ValueError(
                    f"pose items need 'keypoints_csv' or 'person = false': {', '.join(vague)}"
                )
        return self


def golden_dir() -> Path:
    """Where the shipped golden sets are: ``golden/`` beside the bundled catalog."""
    return default_catalog_path().parent / "golden"


def default_golden(task: str) -> str:
    """Name of the shipped golden set of ``task``."""
    return {"detection": "coco-photos", "pose": "squat-pose", "audio": "sound-clips"}[task]


def load_golden(ref: str | Path) -> GoldenSet:
    """A golden set by shipped name (``coco-photos``) or by path to a TOML file."""
    path = Path(ref)
    if path.suffix != ".toml" and "/" not in str(ref):
        path = golden_dir() / f"{ref}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        shipped = sorted(p.stem for p in golden_dir().glob("*.toml"))
        raise GoldenError(
            f"golden set {ref!r} not found at {path} (shipped: {', '.join(shipped)})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise GoldenError(f"golden set {path} is not valid TOML: {exc}") from None
    try:
        return GoldenSet.model_validate(data)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise GoldenError(f"golden set {path} is invalid: {where}") from None


def shipped_media_dir() -> Path:
    """The sample media shipped with edged (``models/media``, beside the golden sets)."""
    return data_dir() / "media"


def media_dir(explicit: Path | None = None) -> Path:
    """The media dir: ``--media``, else ``EDGED_MEDIA_DIR``, else the shipped sample media.

    The golden sets and ``edged demo`` resolve media through here, so an
    installed edged finds its own samples with nothing set. GoldenError when
    the chosen directory does not exist.
    """
    if explicit is not None:
        path, origin = explicit, "--media"
    elif env := os.environ.get("EDGED_MEDIA_DIR"):
        path, origin = Path(env), "EDGED_MEDIA_DIR"
    else:
        # Only an incomplete install gets here: say what else would work.
        path = shipped_media_dir()
        origin = "the sample media shipped with edged; pass --media DIR or set EDGED_MEDIA_DIR"
    if not path.is_dir():
        raise GoldenError(f"media dir {path} is not a directory ({origin})")
    return path


def media_path(media: Path, ref: str) -> Path:
    """The file ``ref`` of a golden item inside the media dir; GoldenError if absent."""
    path = media / ref
    if not path.is_file():
        raise GoldenError(f"golden media {ref!r} not found in {media}")
    return path


@dataclass(frozen=True, slots=True)
class Sound:
    """A clip as read from disk: mono float32 samples in [-1, 1] at ``rate`` Hz."""

    samples: npt.NDArray[np.float32]
    rate: int


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    """An image as HxWx3 RGB uint8, decoded as the ``images`` capture source does."""
    import cv2  # noqa: PLC0415  (OpenCV only when a vision golden set is used)

    data = np.fromfile(path, dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise GoldenError(f"{path} is not a decodable image")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def read_sound(path: Path) -> Sound:
    """A sound file as mono float32 (channels averaged, as the audio pipeline does)."""
    import soundfile  # noqa: PLC0415  (libsndfile only when an audio golden set is used)

    from edged.preprocess.audio import downmix  # noqa: PLC0415

    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except soundfile.SoundFileError as exc:
        raise GoldenError(f"cannot decode {path}: {exc}") from None
    return Sound(downmix(samples), int(rate))


def read_keypoints(path: Path) -> npt.NDArray[np.float64]:
    """Reference keypoints ``(17, 2)`` as normalized (x, y), ordered by keypoint id."""
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        pairs = sorted(
            (int(r["keypoint_id"]), float(r["keypoint_x"]), float(r["keypoint_y"])) for r in rows
        )
    except (OSError, KeyError, ValueError) as exc:
        raise GoldenError(f"cannot read reference keypoints {path}: {exc}") from None
    return np.array([[x, y] for _, x, y in pairs], dtype=np.float64)
