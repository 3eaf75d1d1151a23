"""Configuration: one TOML file, ``EDGED_<SECTION>__<KEY>`` overrides, secrets from files.

The key names are the public contract of docs/configuration.md; renaming one is a breaking
change. Every model forbids unknown keys so that a typo is an error with its key
path instead of a silently ignored setting.
"""

from __future__ import annotations

import math
import os
import re
import socket
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from edged.config.accelerators import ACCELERATORS, valid_accelerator
from edged.errors import ConfigError
from edged.geometry import Anchor, polygon_problem

DEFAULT_CONFIG = Path("/etc/edged/edged.toml")

# MQTT topic segments and names that become topic segments must not contain
# wildcards, separators or control characters (README "MQTT topics and payloads").
_BAD_SEGMENT = re.compile(r"[+#/\x00-\x1f\x7f]")


#: ``METRIC OP NUMBER``, as ``require`` and ``edged models select`` read a requirement.
_REQUIREMENT = re.compile(
    r"^\s*(?P<metric>[a-z_][a-z_0-9]*(?:\([^()]+\))?)\s*(?P<op>>=|<=|==|>|<)\s*"
    r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)


def parse_requirement(text: str) -> tuple[str, str, float]:
    """``recall(person)>=0.9`` → ``("recall(person)", ">=", 0.9)``; ValueError otherwise.

    The grammar of :class:`edged.label.select.Requirement`, kept here so that
    settings validate ``require`` without importing the labels (docs/architecture.md).
    """
    m = _REQUIREMENT.match(text)
    if m is None:
        raise ValueError(
            f"cannot read requirement {text!r}: write METRIC OP NUMBER, "
            "e.g. 'recall(person)>=0.9' or 'p95_ms<=50'"
        )
    return m["metric"], m["op"], float(m["value"])


def check_segment(value: str) -> str:
    """Return ``value`` if it can be used as one MQTT topic segment, else raise ValueError."""
    if not value:
        raise ValueError("must not be empty")
    if _BAD_SEGMENT.search(value):
        raise ValueError(f"{value!r} contains '+', '#', '/' or a control character")
    if len(value.encode()) > 128:
        raise ValueError("is longer than 128 bytes")
    return value


def _empty_is_none(value: object) -> object:
    # docs/configuration.md writes unset paths as "" (TOML has no null): treat it as unset.
    return None if value == "" else value


# Control characters, NUL above all, in a path, host or name are never meant:
# NUL cuts a string short in every C API (open, getaddrinfo, MQTT), so such a
# value would fail deep inside a stage at run time instead of here.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Linux PATH_MAX, bytes.
_PATH_MAX = 4096


def _no_control(value: str) -> str:
    match = _CONTROL.search(value)
    if match:
        raise ValueError(
            f"contains the control character {match.group()!r} at position {match.start()} "
            "(NUL, newline, tab… are not allowed here)"
        )
    return value


def _path_ok(value: Path | None) -> Path | None:
    if value is None:
        return None
    text = str(value)
    _no_control(text)
    if len(os.fsencode(text)) > _PATH_MAX:
        raise ValueError(f"is longer than {_PATH_MAX} bytes")
    return value


#: A string without control characters (hosts, URLs, model names…).
Text = Annotated[str, AfterValidator(_no_control)]
#: A file system path without control characters, at most PATH_MAX bytes.
CleanPath = Annotated[Path, AfterValidator(_path_ok)]
#: An optional path; "" in TOML or the environment means unset.
OptPath = Annotated[Path | None, BeforeValidator(_empty_is_none), AfterValidator(_path_ok)]

#: Upper bound of every period and timeout: one day, seconds. Longer waits are
#: never meant, and an unbounded float (1e308, inf) overflows the C timeouts
#: and timers it ends up in.
DAY_S = 86400.0
#: Upper bound of sizes given in MiB: 1 TiB.
TIB_IN_MIB = 1024 * 1024


class _Section(BaseModel):
    # allow_inf_nan=False: inf and nan pass every ge/le bound test in some
    # direction (nan compares false) and make no sense for any key.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class MqttSettings(_Section):
    """Broker connection. An empty ``host`` makes ``edged demo`` start its own broker."""

    host: Text = Field("127.0.0.1", max_length=253, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port.")
    prefix: str = Field("edged", description="First topic segment of every edged topic.")
    client_id: Text = Field(
        "", max_length=256, description="MQTT client id; default 'edged-<device_id>'."
    )
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version.")
    keepalive_s: int = Field(30, ge=5, le=3600, description="Keep-alive interval, seconds.")
    username: Text = Field("", max_length=256, description="User name; empty for anonymous.")
    password_file: OptPath = Field(
        None, description="File holding the password (or credential 'mqtt_password')."
    )
    tls: bool = Field(False, description="Connect with TLS; the server certificate is verified.")
    ca_file: OptPath = Field(None, description="CA bundle for tls = true; system CAs if unset.")
    homeassistant: bool = Field(True, description="Publish Home Assistant MQTT discovery configs.")
    discovery_prefix: str = Field(
        "homeassistant",
        description="Home Assistant discovery prefix (its MQTT integration's setting); "
        "configs go to '<discovery_prefix>/<component>/edged_<device_id>/<object>/config'.",
    )
    reconnect_min_s: float = Field(
        0.5, ge=0.01, le=3600, description="First reconnect delay, seconds."
    )
    reconnect_max_s: float = Field(
        30.0,
        ge=0.01,
        le=3600,
        description="Reconnect delay cap, seconds; an unreachable broker is also probed "
        "(TCP only) every 0.5 s, so it is reconnected within about a second of its return.",
    )
    max_topic_levels: int = Field(
        32,
        ge=8,
        le=32768,
        description="Most levels in a topic published to (response topics too); "
        "keep it within the broker's limit (mosquitto: 201).",
    )
    max_topic_bytes: int = Field(
        1024,
        ge=512,
        le=65535,
        description="Most bytes in a topic published to (response topics too).",
    )

    @field_validator("prefix", "discovery_prefix")
    @classmethod
    def _prefix_ok(cls, v: str) -> str:
        return check_segment(v)


class OutboxSettings(_Section):
    """Durable result queue between pipelines and MQTT."""

    path: CleanPath = Field(
        Path("/var/lib/edged/outbox.sqlite3"), description="SQLite file of the outbox."
    )
    max_mb: float = Field(
        256, ge=0.01, le=TIB_IN_MIB, description="Size bound, MiB; oldest evicted first."
    )
    max_age_hours: float = Field(
        72, ge=0.01, le=8760, description="Age bound, hours (at most a year); also MQTT 5 expiry."
    )
    min_free_mb: float = Field(
        8,
        ge=0,
        le=1_048_576,
        description="Free-space floor, MiB, on the outbox's file system: below it the file "
        "stops growing; results are published live while the broker is connected, else "
        "the oldest stored make room (counted, state 'degraded').",
    )


class ModelsSettings(_Section):
    """Where models live on the device and where they are fetched from."""

    dir: CleanPath = Field(Path("/var/lib/edged/models"), description="Installed model files.")
    mirror: OptPath = Field(
        None,
        description="Local directory to pull from instead of the URLs (or EDGED_MODEL_MIRROR).",
    )
    catalog: OptPath = Field(None, description="Catalog TOML; default: the bundled catalog.")


SourceKind = Literal["picamera2", "v4l2", "stream", "file", "images", "microphone", "wav"]

#: Which source kinds each pipeline task can read: vision tasks take frames,
#: the audio task takes samples. A pairing outside this table cannot run.
TASK_SOURCE_KINDS: dict[str, tuple[str, ...]] = {
    "detection": ("picamera2", "v4l2", "stream", "file", "images"),
    "pose": ("picamera2", "v4l2", "stream", "file", "images"),
    "audio": ("microphone", "wav"),
}


class SourceSettings(_Section):
    """One capture source; any number of pipelines may read from it."""

    name: str = Field(description="Source name, used in topics and by pipelines.")
    kind: SourceKind = Field(description="What the source is.")
    uri: Text = Field(
        "", max_length=_PATH_MAX, description="Device, URL or path (unused for picamera2)."
    )
    fps: float = Field(10.0, ge=0.01, le=240, description="Capture rate cap, frames per second.")
    loop: bool = Field(False, description="File sources: start over at the end.")
    realtime: bool = Field(
        True, description="File sources: pace at the file's frame rate (false: as fast as read)."
    )
    width: int = Field(
        640, ge=16, le=8192, description="picamera2/v4l2: requested frame width, px."
    )
    height: int = Field(
        480, ge=16, le=8192, description="picamera2/v4l2: requested frame height, px."
    )
    rate: int = Field(16000, ge=8000, le=192000, description="microphone: sample rate, Hz.")
    channels: int = Field(
        1, ge=1, le=8, description="microphone: channels captured (mixed to mono)."
    )
    reconnect_min_s: float = Field(
        1.0, ge=0.01, le=3600, description="First reopen delay, seconds."
    )
    reconnect_max_s: float = Field(30.0, ge=0.01, le=3600, description="Reopen delay cap, seconds.")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        return check_segment(v)

    @model_validator(mode="after")
    def _uri_needed(self) -> SourceSettings:
        if self.kind not in ("picamera2", "microphone") and not self.uri:
            raise ValueError(f"sources of kind {self.kind!r} need a 'uri'")
        return self


class PipelineOffloadSettings(_Section):
    """Per-pipeline opt-in to the cloud model."""

    enabled: bool = Field(False, description="Offload uncertain results of this pipeline.")
    band: tuple[float, float] = Field(
        (0.35, 0.6),
        description="Uncertainty band [low, high) of the best score of the labels of interest; "
        "while offload is on, the model reports scores down to 'low' (even below 'threshold') "
        "so that the policy can see them.",
    )

    @model_validator(mode="after")
    def _band_ok(self) -> PipelineOffloadSettings:
        low, high = self.band
        if not 0.0 <= low < high <= 1.0:
            raise ValueError("band must satisfy 0 <= low < high <= 1")
        return self


#: Sound-event loudness gate value that means "off" (quieter than any 16-bit recording).
GATE_OFF_DBFS = -120.0


class SoundEventSettings(_Section):
    """Audio: sound events from groups of the model's labels (README "Events").

    A group's score in a window is the best score of its labels. An event
    starts once the score stays at or above ``threshold`` for ``min_s``
    (consecutive windows) and ends once it has stayed below for
    ``hangover_s``; its ``end`` time is the end of the last window above.
    """

    groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Watched label groups: group name (a topic segment) -> the model's label "
        'names, e.g. dog = ["Dog", "Bark", "Howl"]; empty: no sound events.',
    )
    threshold: float = Field(0.5, ge=0, le=1, description="Score a group must reach.")
    min_s: float = Field(
        0.5, ge=0, le=600, description="Seconds above threshold before an event starts."
    )
    hangover_s: float = Field(
        2.0, ge=0, le=600, description="Seconds below threshold before an event ends."
    )
    update_s: float = Field(
        0.0,
        ge=0,
        le=DAY_S,
        description="Publish an 'update' of an open event at most this often, s (0: none).",
    )
    gate_dbfs: float = Field(
        GATE_OFF_DBFS,
        ge=GATE_OFF_DBFS,
        le=0,
        description="Loudness gate: windows quieter than this (RMS, dBFS) skip inference and "
        "count as below threshold; -120 turns the gate off.",
    )
    clip_dir: OptPath = Field(
        None, description="Write a WAV clip of each event here (unset: no clips)."
    )
    pre_roll_s: float = Field(2.0, ge=0, le=30, description="Clip: audio kept before the start, s.")
    max_clip_s: float = Field(
        30.0,
        ge=1,
        le=600,
        description="Clip: longest clip, s (a longer event keeps its last part).",
    )
    clip_max_mb: float = Field(
        64.0, ge=0.01, le=TIB_IN_MIB, description="Clip directory size bound, MiB; oldest first."
    )

    @field_validator("groups")
    @classmethod
    def _groups_ok(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, labels in v.items():
            try:
                check_segment(name)
            except ValueError as exc:
                raise ValueError(f"group name {name!r} {exc}") from None
            if not labels:
                raise ValueError(f"group {name!r} lists no labels")
            for label in labels:
                _no_control(label)
        return v


class FallSettings(_Section):
    """Pose: a ``fall`` event when a tracked person lies (README "Events").

    A person *lies* in a frame when the torso (shoulder midpoint to hip
    midpoint) is more than ``angle_deg`` from vertical AND the pose's box is
    at least ``aspect`` times wider than tall. Lying for ``min_s`` starts the
    event; not lying for ``hangover_s`` (or the track ending) ends it.
    """

    enabled: bool = Field(False, description="Publish fall events (pose pipelines).")
    angle_deg: float = Field(
        45.0, ge=10, le=90, description="Torso angle from vertical above which it counts, deg."
    )
    aspect: float = Field(
        1.2, ge=0.2, le=10, description="Box width / height at or above which it counts."
    )
    min_s: float = Field(2.0, ge=0, le=600, description="Seconds lying before the event starts.")
    hangover_s: float = Field(
        2.0, ge=0, le=600, description="Seconds not lying before the event ends."
    )
    keypoint_score: float = Field(
        0.3, ge=0, le=1, description="Shoulders and hips count when their score reaches this."
    )
    still_move: float = Field(
        0.02,
        ge=0,
        le=1,
        description="No-motion: mean keypoint movement below this (fraction of the frame) "
        "counts as still.",
    )
    still_s: float = Field(
        10.0,
        ge=0.1,
        le=DAY_S,
        description="No-motion: a lying person still for this long gets one 'update' with "
        "data.still = true, s.",
    )


#: A normalized point ``[x, y]``, ``x`` to the right and ``y`` down, each in [0, 1]
#: (checked by the polygon and line validators, which name the point).
NormPoint = tuple[float, float]
#: Where on its box an object is (``edged.geometry.Anchor``).
AnchorName = Anchor


def _polygon_ok(value: list[tuple[float, float]]) -> list[tuple[float, float]]:
    problem = polygon_problem(value)
    if problem is not None:
        raise ValueError(f"polygon {problem}")
    return value


#: A zone or mask outline: at least 3 normalized points, a simple polygon with some area.
Polygon = Annotated[
    list[NormPoint], Field(min_length=3, max_length=64), AfterValidator(_polygon_ok)
]


def _labels_ok(value: list[str]) -> list[str]:
    # Zone labels become count topics (…/zones/<zone>/count/<label>).
    for label in value:
        check_segment(label)
    return value


class ZoneSettings(_Section):
    """A named area of a detection pipeline's frame; an object is in it by its box's anchor."""

    name: str = Field(description="Zone name, a topic segment (…/zones/<name>/…).")
    polygon: Polygon = Field(
        description="Outline as [[x, y], …]: at least 3 points, fractions of the frame's width "
        "and height (0-1, y down), not crossing itself."
    )
    labels: Annotated[list[str], AfterValidator(_labels_ok)] = Field(
        default_factory=list, description="Only these labels count in the zone (empty: all)."
    )
    anchor: AnchorName = Field(
        "bottom_center", description="The point of an object's box that must lie in the zone."
    )
    min_frames: int = Field(
        1,
        ge=1,
        le=1000,
        description="Debounce: consecutive inferred frames an object must be inside to enter "
        "(and outside to leave) the zone.",
    )
    dwell_s: float = Field(
        0.0,
        ge=0.0,
        le=DAY_S,
        description="An object enters the zone only after its anchor stayed inside this long, s.",
    )

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        return check_segment(v)


class MaskSettings(_Section):
    """An area whose detections are dropped before tracking and publishing."""

    polygon: Polygon = Field(description="Outline as [[x, y], …], like a zone's polygon.")
    anchor: AnchorName = Field(
        "bottom_center", description="A detection whose anchor lies inside is dropped."
    )


class LineSettings(_Section):
    """A tripwire: tracked objects whose anchor crosses the segment a-b make a line event."""

    name: str = Field(description="Line name (in the event's data).")
    a: NormPoint = Field(description="First end [x, y] (fractions of the frame, y down).")
    b: NormPoint = Field(description="Second end [x, y].")
    labels: Annotated[list[str], AfterValidator(_labels_ok)] = Field(
        default_factory=list, description="Only these labels cross the line (empty: all)."
    )
    anchor: AnchorName = Field("bottom_center", description="The point of the box that crosses.")
    direction: Literal["both", "left_to_right", "right_to_left"] = Field(
        "both",
        description="Crossings that count. Left and right are as seen standing at a, looking "
        "toward b on the image: for a = [0.5, 1], b = [0.5, 0] left_to_right is a move from the "
        "image's left half to its right half.",
    )

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        return check_segment(v)

    @model_validator(mode="after")
    def _has_length(self) -> LineSettings:
        for end, (x, y) in (("a", self.a), ("b", self.b)):
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(
                    f"line {self.name!r}: {end} = {[x, y]} is outside [0, 1] (coordinates are "
                    "fractions of the frame's width and height, not pixels)"
                )
        if math.dist(self.a, self.b) < 1e-3:
            raise ValueError(f"line {self.name!r}: a and b are the same point; a line needs length")
        return self


class PipelineSettings(_Section):
    """Source → model → results. One model per pipeline."""

    name: str = Field(description="Pipeline name, a topic segment.")
    source: Text = Field(description="Name of the source to read.")
    task: Literal["detection", "pose", "audio"] = Field(description="What the model does.")
    model: Text = Field(
        max_length=_PATH_MAX, description="Catalog name, or a path to a model file."
    )
    decoder: Text = Field(
        "", max_length=64, description="Decoder for a model given by path (e.g. 'yolox')."
    )
    label_file: OptPath = Field(None, description="Labels for a model given by path.")
    threshold: float = Field(0.5, ge=0, le=1, description="Minimum score to report.")
    labels: list[str] = Field(default_factory=list, description="Only report these labels.")
    publish: Literal["all", "changes", "nonempty"] = Field(
        "changes",
        description="Which results to publish: all, changes (labels seen changed, or "
        "heartbeat_s passed) or nonempty (something at or above threshold). Audio pipelines "
        "default to nonempty: every window whose best class reaches threshold.",
    )
    heartbeat_s: float = Field(
        30.0,
        ge=0.1,
        le=DAY_S,
        description="publish = changes: republish unchanged results this often, s.",
    )
    max_fps: float = Field(5.0, ge=0.01, le=240, description="Inference rate cap, per second.")
    threads: int = Field(
        2,
        ge=1,
        le=64,
        description=(
            "Inference threads for this model. At the number of usable cores or more, a "
            "`realtime = false` file source decodes this pipeline's next frame when it asks "
            "for it, not beside its inference."
        ),
    )
    accelerator: str = Field(
        "auto",
        description=(
            "Where the model runs: auto, cpu, cuda, tensorrt, openvino (or openvino:GPU, "
            "openvino:NPU, ...), xnnpack, edgetpu. auto picks the best one installed and "
            "falls back to the CPU with a warning; an explicit one that is absent or fails "
            "to start is a configuration error. See docs/nutrition-labels.md."
        ),
    )
    motion_gate: bool = Field(False, description="Skip frames without motion.")
    motion_area: float = Field(
        0.005,
        ge=1e-6,
        le=1,
        description="Motion gate: changed fraction of the image that counts as motion.",
    )
    keepalive_s: float = Field(
        10.0,
        ge=0.1,
        le=DAY_S,
        description="Motion gate: run inference at least this often anyway, seconds.",
    )
    track: bool = Field(
        True,
        description="Detection: track objects and publish events. Pose with a detector: give "
        "each person a track_id.",
    )
    hop_s: float = Field(0.48, ge=0.01, le=10, description="Audio: step between windows, seconds.")
    top_k: int = Field(5, ge=1, le=50, description="Audio: classes reported per window.")
    smoothing: int = Field(
        1, ge=1, le=20, description="Audio: average scores over this many windows (1 = off)."
    )
    offload: PipelineOffloadSettings = Field(default_factory=PipelineOffloadSettings)
    detector: Text = Field(
        "",
        max_length=_PATH_MAX,
        description="Pose: a person detector (catalog detection model) for several people; "
        "each person is cropped, posed and tracked.",
    )
    detector_threshold: float = Field(
        0.5, ge=0, le=1, description="Pose with detector: minimum person detection score."
    )
    max_people: int = Field(
        5, ge=1, le=50, description="Pose with detector: people posed per frame (best first)."
    )
    fall: FallSettings = Field(default_factory=FallSettings)
    sound_events: SoundEventSettings = Field(default_factory=SoundEventSettings)
    zones: list[ZoneSettings] = Field(
        default_factory=list, description="Detection: named zones (docs/configuration.md)."
    )
    masks: list[MaskSettings] = Field(
        default_factory=list, description="Detection: areas whose detections are dropped."
    )
    lines: list[LineSettings] = Field(
        default_factory=list, description="Detection: tripwires crossed by tracked objects."
    )
    require: list[Annotated[str, Field(max_length=200)]] = Field(
        default_factory=list,
        max_length=16,
        description="The bar a model rolled out to this pipeline must clear on the device's "
        "golden set, as `edged models select` reads it: METRIC OP NUMBER, e.g. "
        "'recall(person)>=0.9', 'p95_ms<=120' (docs/rollout.md).",
    )
    max_latency_ms: float = Field(
        0.0,
        ge=0,
        le=600_000,
        description="Latency budget: a rolled-out model whose latency p95 goes over it during "
        "probation is rolled back, and with right_size a sustained p95 over it steps down to a "
        "smaller model; 0 = no budget, ms.",
    )
    right_size: bool = Field(
        False,
        description="Step down to the next smaller catalog model that meets 'require' when the "
        "device cannot hold max_latency_ms, max_temp_c or max_drop_ratio for [rollout] "
        "window_s, and back up when headroom returns (docs/rollout.md).",
    )
    max_temp_c: float = Field(
        0.0,
        ge=0,
        le=150,
        description="right_size: SoC temperature (as in stats) above which to step down; 0 = "
        "no thermal limit, °C.",
    )
    max_drop_ratio: float = Field(
        0.0,
        ge=0,
        le=1,
        description="right_size: frames dropped / frames offered above which to step down; 0 = "
        "no bound.",
    )

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        return check_segment(v)

    @field_validator("require")
    @classmethod
    def _require_ok(cls, v: list[str]) -> list[str]:
        for text in v:
            parse_requirement(text)
        return v

    @field_validator("accelerator")
    @classmethod
    def _accelerator_ok(cls, v: str) -> str:
        if not valid_accelerator(v):
            raise ValueError(f"unknown accelerator {v!r}; one of: {', '.join(ACCELERATORS)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _audio_publishes_nonempty(cls, data: Any) -> Any:
        # Audio results are per-window scores that consumers aggregate over
        # time, so by default every window reaching the threshold is
        # published (what audio always did); an explicit publish wins.
        if isinstance(data, dict) and data.get("task") == "audio" and "publish" not in data:
            return {**data, "publish": "nonempty"}
        return data

    @model_validator(mode="after")
    def _right_size_ok(self) -> PipelineSettings:
        if self.right_size and not (self.max_latency_ms or self.max_temp_c or self.max_drop_ratio):
            raise ValueError(
                "right_size needs a limit to hold: set max_latency_ms, max_temp_c or max_drop_ratio"
            )
        if self.right_size and (self.task == "audio" or self.detector):
            raise ValueError(
                "right_size is for detection and single-person pose pipelines (no audio, no "
                "detector)"
            )
        return self

    @model_validator(mode="after")
    def _zones_ok(self) -> PipelineSettings:
        # Zones, masks and lines are about boxes; zones and lines follow
        # objects over frames, which needs the tracker's ids.
        if (self.zones or self.masks or self.lines) and self.task != "detection":
            raise ValueError(
                f"zones, masks and lines need task = 'detection', not {self.task!r}; "
                "remove them from this pipeline"
            )
        if (self.zones or self.lines) and not self.track:
            raise ValueError(
                "zones and lines follow tracked objects: set track = true for this pipeline"
            )
        for what, names in (
            ("zone", [z.name for z in self.zones]),
            ("line", [ln.name for ln in self.lines]),
        ):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(
                    f"{what} name {twice[0]!r} is used more than once in this pipeline"
                )
        return self

    @model_validator(mode="after")
    def _offload_task_ok(self) -> PipelineSettings:
        # Audio is never sent off the device, and the cloud protocol carries
        # detections only: refuse rather than silently not offloading.
        if self.offload.enabled and self.task != "detection":
            raise ValueError(
                f"offload.enabled: offload is implemented for detection pipelines only, "
                f"not {self.task!r}; set offload.enabled = false for this pipeline"
            )
        return self

    @model_validator(mode="after")
    def _event_task_ok(self) -> PipelineSettings:
        # Options of another task would be silently ignored: refuse them by key.
        if self.detector and self.task != "pose":
            raise ValueError(f"detector: only pose pipelines use a detector, not {self.task!r}")
        if self.fall.enabled and self.task != "pose":
            raise ValueError(f"fall.enabled: fall events need a pose pipeline, not {self.task!r}")
        if self.sound_events.groups and self.task != "audio":
            raise ValueError(
                f"sound_events.groups: sound events need an audio pipeline, not {self.task!r}"
            )
        return self


class OffloadSettings(_Section):
    """The cloud model endpoint and the budget for using it."""

    url: Text = Field(
        "",
        max_length=2048,
        description="Base https:// URL of the cloud model server (it serves /health and "
        "/v1/detect, see docs/cloud-protocol.md); empty disables offload.",
    )
    token_file: OptPath = Field(None, description="Bearer token file (credential 'offload_token').")
    ca_file: OptPath = Field(
        None, description="CA bundle to verify the endpoint; system CAs if unset (never off)."
    )
    max_rtt_ms: float = Field(
        300, ge=1, le=60000, description="Link counts as degraded above this RTT, ms."
    )
    frames_per_minute: float = Field(
        6,
        ge=0,
        le=600,
        description="Budget: frames sent per minute (a token bucket holding one minute).",
    )
    mb_per_day: float = Field(
        50,
        ge=0,
        le=1e6,
        description="Budget: request bytes sent per UTC day, MB (10^6 bytes); kept in "
        "state_dir across restarts.",
    )
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality of sent frames.")
    max_side: int = Field(640, ge=32, le=8192, description="Longest side of sent frames, px.")
    crop: bool = Field(
        True, description="Send the union of the uncertain boxes (plus crop_margin), not the frame."
    )
    crop_margin: float = Field(
        0.15, ge=0, le=2, description="Margin around the crop on each side, fraction of its size."
    )
    probe_interval_s: float = Field(
        30.0, ge=0.1, le=DAY_S, description="Period of the link probe (GET <url>/health), s."
    )
    metered: bool = Field(False, description="The link is metered: send nothing while true.")
    metered_file: OptPath = Field(
        None,
        description="While this file exists the link counts as metered (e.g. created by a "
        "network dispatcher script on LTE); checked every second.",
    )
    connect_timeout_s: float = Field(
        3.0, ge=0.1, le=DAY_S, description="Timeout of a TCP connect plus TLS handshake, s."
    )
    read_timeout_s: float = Field(
        10.0, ge=0.1, le=DAY_S, description="Longest wait for any one read of a response, s."
    )
    max_age_s: float = Field(
        15.0,
        ge=0.1,
        le=DAY_S,
        description="A frame not answered this long after it was queued is given up; "
        "retries happen only before that, s.",
    )
    queue_size: int = Field(
        4, ge=1, le=64, description="Frames waiting to be sent; the oldest is dropped when full."
    )
    max_response_kib: int = Field(
        1024,
        ge=4,
        le=1024 * 1024,
        description="Largest response accepted, KiB (at most 1 GiB); a longer one is aborted.",
    )

    @field_validator("url")
    @classmethod
    def _https_only(cls, v: str) -> str:
        # Frames leave the device only encrypted and to a verified server.
        if v and (not v.startswith("https://") or len(v) <= len("https://")):
            raise ValueError(f"{v!r} is not an https:// URL (plain http is refused)")
        return v.rstrip("/")


class MetricsSettings(_Section):
    """Prometheus endpoint (needs the 'metrics' extra: prometheus-client)."""

    enabled: bool = Field(False, description="Serve Prometheus metrics over HTTP.")
    host: Text = Field(
        "127.0.0.1",
        max_length=253,
        description="Address to listen on; loopback by default (metrics reveal what the "
        "device sees and are served without authentication).",
    )
    port: int = Field(9108, ge=1, le=65535, description="TCP port of the /metrics endpoint.")


#: Every MQTT command, by name (``edged/control/commands.py`` implements them).
CommandName = Literal[
    "ping",
    "enable",
    "disable",
    "set_enabled",
    "set_threshold",
    "reload",
    "snapshot",
    "event_snapshot",
    "model_update",
]

#: Commands that change nothing and reveal nothing beyond what ``state`` already
#: publishes: the default allow-list.
READ_ONLY_COMMANDS: tuple[CommandName, ...] = ("ping",)


class CommandsSettings(_Section):
    """Which MQTT commands the daemon runs (docs/commands.md).

    The allow-list decides *what* may be asked; *who* may ask is the broker's
    ACL on ``<prefix>/<device_id>/cmd/#`` (docs/commands.md), since MQTT
    carries no authenticated sender in a message.
    """

    allow: list[CommandName] = Field(
        default=list(READ_ONLY_COMMANDS),
        description="Commands the daemon runs; any other is answered 'not allowed'. The default "
        "is the read-only 'ping'; 'enable', 'disable', 'set_enabled', 'set_threshold', 'reload', "
        "'model_update', 'snapshot' (a camera image) and 'event_snapshot' (an event's stored "
        "JPEG) must be listed to be accepted. Applied on reload; Home Assistant controls are "
        "announced only for allowed commands.",
    )


class EventsSettings(_Section):
    """Object events' media on the device: best snapshots and optional clips (README "Events").

    Nothing here leaves the device unless ``publish_snapshots`` is on or the
    ``event_snapshot`` command is allowed. Applied at restart.
    """

    snapshots: bool = Field(
        True, description="Keep each object event's best frame as JPEG (full and cropped)."
    )
    dir: OptPath = Field(
        None, description="Where event media are kept; default <state_dir>/events."
    )
    max_mb: float = Field(
        512, ge=1, le=TIB_IN_MIB, description="Size bound of the store, MiB; oldest evicted first."
    )
    max_age_hours: float = Field(
        168, ge=0.01, le=8760, description="Media older than this are deleted, hours."
    )
    quality: int = Field(85, ge=10, le=100, description="JPEG quality of snapshots.")
    max_side: int = Field(
        1920,
        ge=64,
        le=8192,
        description="Longest side of snapshots and clips, px (never upscaled).",
    )
    crop_margin: float = Field(
        0.15, ge=0, le=2, description="Margin around the box of the cropped snapshot, fraction."
    )
    publish_snapshots: bool = Field(
        False,
        description="Publish each ended event's snapshot on <prefix>/<dev>/<pipeline>/events/"
        "<event_id>/snapshot (JPEG, QoS 1, not retained).",
    )
    clips: bool = Field(
        False, description="Record an MP4 of each object event (pre-roll + event + post-roll)."
    )
    pre_roll_s: float = Field(5.0, ge=0, le=60, description="Clip: seconds before the event.")
    post_roll_s: float = Field(
        5.0,
        ge=0,
        le=60,
        description="Clip: seconds after the event; its 'end' message waits for them.",
    )
    clip_fps: float = Field(
        10.0,
        ge=1,
        le=30,
        description="Clip frame rate; also bounds the in-memory ring of recent frames "
        "(pre_roll_s + 2 s) x clip_fps JPEGs per pipeline.",
    )


class RolloutSettings(_Section):
    """How a model rolled out over MQTT is watched after the switch (docs/rollout.md)."""

    probation_s: float = Field(
        60.0,
        ge=0,
        le=DAY_S,
        description="After a switch, watch the pipeline this long; an error ratio or a latency "
        "p95 over its budget rolls back to the previous model, s.",
    )
    max_error_ratio: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Probation: failed frames / frames above this rolls back.",
    )
    min_frames: int = Field(
        5,
        ge=1,
        le=10_000,
        description="Probation: frames the new model must run before its p95 and error ratio "
        "are judged (fewer say nothing).",
    )
    allow_urls: bool = Field(
        False,
        description="model_update may name a URL (with its sha256) to fetch another build of a "
        "catalog model from; off: only the catalog's own sources (mirror, publisher URLs).",
    )
    window_s: float = Field(
        30.0,
        ge=1,
        le=DAY_S,
        description="right_size: a limit must be broken (or headroom seen) this long before a "
        "pipeline steps down (or up), s.",
    )
    step_up_below: float = Field(
        0.7,
        ge=0.1,
        le=0.95,
        description="right_size: step back up once latency p95 stays below this fraction of "
        "max_latency_ms (and temperature below max_temp_c) for window_s (hysteresis).",
    )


class Settings(BaseSettings):
    """Root of the configuration (docs/configuration.md)."""

    model_config = SettingsConfigDict(
        env_prefix="EDGED_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
    )

    device_id: str = Field(
        default_factory=socket.gethostname, description="Device id; default hostname."
    )
    state_dir: CleanPath = Field(
        Path("/var/lib/edged"), description="Writable state (outbox, seq)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level."
    )
    stats_interval_s: float = Field(
        10.0, ge=0.1, le=DAY_S, description="Period of the stats message, s."
    )
    watchdog_stall_s: float = Field(
        30.0,
        ge=1,
        le=DAY_S,
        description="A pipeline whose source is up but that finished no input for this long is "
        "stalled: the systemd watchdog is no longer pinged, so systemd restarts the daemon "
        "(the unit's WatchdogSec must be longer). Keep it above the longest gap between "
        "inputs (1/fps, 1/max_fps), s.",
    )
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    sources: list[SourceSettings] = Field(default_factory=list)
    pipelines: list[PipelineSettings] = Field(default_factory=list)
    offload: OffloadSettings = Field(default_factory=OffloadSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    commands: CommandsSettings = Field(default_factory=CommandsSettings)
    events: EventsSettings = Field(default_factory=EventsSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],  # noqa: ARG003
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003  (no .env files on devices)
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003  (secrets: read_secret)
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the file: systemd drop-ins and Ansible can
        # override one key without templating the whole file.
        return (env_settings, init_settings)

    @field_validator("device_id")
    @classmethod
    def _device_ok(cls, v: str) -> str:
        return check_segment(v)

    @model_validator(mode="after")
    def _references_ok(self) -> Settings:
        names = [s.name for s in self.sources]
        pnames = [p.name for p in self.pipelines]
        problems = [
            f"source name {d!r} is used more than once"
            for d in sorted({n for n in names if names.count(n) > 1})
        ]
        problems += [
            f"pipeline name {d!r} is used more than once"
            for d in sorted({n for n in pnames if pnames.count(n) > 1})
        ]
        problems += [
            f"pipeline {p.name!r} reads source {p.source!r}, which is not defined "
            f"(sources: {', '.join(names) or 'none'})"
            for p in self.pipelines
            if p.source not in names
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _task_reads_its_source_kind(self) -> Settings:
        # A detection pipeline on a WAV source passed validation and then died
        # in the graph (exit 1, a restart loop under systemd): refuse it here,
        # so that `check`, `run` and `reload` all name the keys to change.
        kinds = {s.name: s.kind for s in self.sources}
        errors: list[InitErrorDetails] = []
        for i, p in enumerate(self.pipelines):
            fits = TASK_SOURCE_KINDS[p.task]
            # An undefined source is reported by _references_ok.
            if p.source not in kinds or kinds[p.source] in fits:
                continue
            need = "audio" if p.task == "audio" else "video"
            problem = (
                f"task {p.task!r} reads {need} sources, but pipelines[{i}].source "
                f"{p.source!r} is a {kinds[p.source]!r} source (kinds that fit: "
                f"{', '.join(fits)}); change the task or point the pipeline at such a source"
            )
            errors.append(
                InitErrorDetails(
                    # "{problem}": the message is already formatted; the key path
                    # comes from loc, as for every other error.
                    type=PydanticCustomError("task_source_kind", "{problem}", {"problem": problem}),
                    loc=("pipelines", i, "task"),
                    input=p.task,
                )
            )
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    @property
    def events_dir(self) -> Path:
        """Where event media are kept: ``[events] dir``, else ``<state_dir>/events``."""
        return self.events.dir or self.state_dir / "events"

    def source(self, name: str) -> SourceSettings:
        """The source called ``name`` (validated to exist for every pipeline)."""
        return next(s for s in self.sources if s.name == name)


def _loc(loc: tuple[int | str, ...]) -> str:
    """Turn a pydantic error location into a TOML-like key path: ``pipelines[0].threshold``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-after", "function-before")):
            continue
        else:
            out += ("." if out else "") + part
    return out or "(root)"


#: A configuration file is a few KiB; anything far larger is not one (and is
#: not read into memory whole, e.g. a config path pointing at a disk image).
MAX_CONFIG_BYTES = 1 << 20


def _read_config(path: Path) -> dict[str, Any]:
    """Parse the TOML file at ``path``; every way it can be unusable is a :class:`ConfigError`.

    Each problem names the file, and the line and column when the parser knows
    them, because this message is also the reply to an MQTT ``reload``.
    """
    where = str(path)

    def refuse(problem: str) -> ConfigError:
        return ConfigError([(where, problem)], file=where)

    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise refuse("is a directory, not a config file")
        if not stat.S_ISREG(info.st_mode):
            # A FIFO or a device would block or never end.
            raise refuse("is not a regular file")
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise refuse("config file not found") from None
    except PermissionError:
        raise refuse("config file is not readable (permission denied)") from None
    except OSError as exc:
        raise refuse(f"cannot read config file: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. a NUL byte in the path itself
        raise refuse(f"not a usable path: {exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise refuse(f"larger than {MAX_CONFIG_BYTES // 1024} KiB: not a config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise refuse(
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line}, column "
            f"{column} (TOML files are UTF-8; re-save the file as UTF-8)",
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise refuse(f"not valid TOML: {exc}") from None
    except ValueError as exc:  # tomllib lets int()'s digit limit through unwrapped
        raise refuse(f"not valid TOML: {exc}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively; no
        # configuration of ours nests more than three levels deep.
        raise refuse("not valid TOML: arrays or inline tables are nested too deeply") from None


def load_settings(path: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load and validate settings from ``path`` (TOML) plus ``EDGED_*`` env variables.

    Raises :class:`ConfigError` listing every problem with its key path, and
    nothing else, whatever the file holds.
    """
    data: dict[str, Any] = _read_config(path) if path is not None else {}
    file = None if path is None else str(path)
    data.update(overrides or {})
    # pydantic-settings reads init keywords starting with '_' as *its own*
    # options (``_cli_parse_args``, ``_secrets_dir``, ``_env_file``…): from a
    # file they would reconfigure the loader itself, so they are unknown keys.
    underscored = sorted(k for k in data if k.startswith("_"))
    if underscored:
        raise ConfigError([(_loc((k,)), "unknown key") for k in underscored], file=file)
    try:
        return Settings(**data)
    except SettingsError as exc:  # an EDGED_* variable that is not valid JSON, etc.
        raise ConfigError([("environment", str(exc))], file=file) from None
    except ValidationError as exc:
        problems = [(_loc(e["loc"]), e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
        raise ConfigError(problems, file=file) from None


def read_secret(path: Path | None, credential: str) -> str | None:
    """Read a secret from ``$CREDENTIALS_DIRECTORY/<credential>`` (systemd) or ``path``.

    The credential directory wins because under systemd ``LoadCredential`` is
    the only place the sandboxed service can read secrets from. Trailing
    newlines are stripped. Returns None when neither exists.
    """
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        cred = Path(cred_dir) / credential
        if cred.is_file():
            return cred.read_text().rstrip("\r\n")
    if path is None:
        return None
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(
            [(credential, f"cannot read secret file {path}: {exc.strerror}")]
        ) from None
