"""Payloads edged publishes (README "MQTT topics and payloads") and the :class:`Message` handed to MQTT.

Two steps turn a result into bytes, because ``id`` and ``seq`` are assigned by
different owners at different times:

1. A pipeline builds a result model (``detections_result(…)`` etc.). The model
   gets its ``id`` right there, once: retries re-send the same bytes, so
   consumers can deduplicate on it. It has no ``seq`` yet.
2. Whoever *accepts* the result (the durable outbox, README "Delivery guarantees") wraps it in a
   :class:`ResultEnvelope` and calls :meth:`ResultEnvelope.with_seq` inside
   the transaction that stores it, so the per-device counter and the stored
   row can never disagree, across restarts included. The resulting
   :class:`Message` is immutable; the same bytes go out on every retry.

Floats are rounded (scores and coordinates to 4 decimals, timings to 2) when
a model is built, so payloads stay small and equal inputs give equal bytes.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    RootModel,
    Tag,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from edged.config.settings import CommandName, check_segment
from edged.publish.topics import ResultKind, Topics
from edged.types import AudioClass, Detection, Frame, Pose

PAYLOAD_VERSION: Final = 1

# Box coordinates a little outside [0, 1] are normal (a box reaching into the
# letterbox padding, float error) and are clamped; far outside means the
# decoder forgot to normalize (pixel coordinates), which must not be published.
_BOX_SLACK: Final = 0.5


# --- small value helpers ---------------------------------------------------


# The random bits of result ids. Seeded once from the OS; each draw then stays
# in C under the GIL. os.urandom per id is a syscall that releases the GIL, and
# with busy bookkeeping threads the pipeline thread waited ~0.3 ms per result to
# get it back. Ids must be unique, not unpredictable: 74 bits under a ms clock.
_ID_BITS: Final = random.Random(os.urandom(32))  # noqa: S311 (unique, not secret)
# A forked child must not repeat its parent's ids.
os.register_at_fork(after_in_child=lambda: _ID_BITS.seed(os.urandom(32)))


def new_id() -> str:
    """A new result id: a UUIDv7 string (48-bit Unix ms timestamp + 74 random bits).

    Time-ordered ids keep database indexes compact and let a human see roughly
    when a result was made; ordering guarantees come from ``seq``, not ``id``.
    """
    ms = time.time_ns() // 1_000_000
    rand = _ID_BITS.getrandbits(74)
    rand_a = (rand >> 62) & 0xFFF
    rand_b = rand & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def iso_utc(ts: float) -> str:
    """Format epoch seconds as ISO-8601 UTC with milliseconds and ``Z``."""
    text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _round4(v: float) -> float:
    return round(v, 4)


def _round2(v: float) -> float:
    return round(v, 2)


def _round3(v: float) -> float:
    return round(v, 3)


def _round1(v: float) -> float:
    return round(v, 1)


def _unit(v: float) -> float:
    # Keypoints of a body partly outside the frame are predicted in the
    # letterbox padding; clamping keeps them at the frame edge.
    return round(min(1.0, max(0.0, v)), 4)


def _box(v: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    if any(not -_BOX_SLACK <= c <= 1.0 + _BOX_SLACK for c in v):
        raise ValueError(
            f"box {list(v)} is not normalized to [0, 1] (pixel coordinates?): "
            "divide by the original frame's width and height"
        )
    x0, y0, x1, y1 = (round(min(1.0, max(0.0, c)), 4) for c in v)
    if x0 > x1 or y0 > y1:
        raise ValueError(f"box {list(v)} is not [x_min, y_min, x_max, y_max]")
    return (x0, y0, x1, y1)


def _segment(v: str) -> str:
    return check_segment(v)


Score = Annotated[float, Field(ge=0.0, le=1.0), AfterValidator(_round4)]
Coord = Annotated[float, AfterValidator(_unit)]
Millis = Annotated[float, Field(ge=0.0), AfterValidator(_round2)]
NormBox = Annotated[
    tuple[float, float, float, float],
    AfterValidator(_box),
    Field(description="Normalized [x_min, y_min, x_max, y_max] in the original frame."),
]
Name = Annotated[str, AfterValidator(_segment)]
Timestamp = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$",
        description="ISO-8601 UTC with milliseconds, e.g. 2026-11-21T23:37:53.123Z.",
    ),
]


class _Payload(BaseModel):
    # NaN/inf cannot be written as JSON; rejecting them here points at the
    # stage that produced them instead of at a consumer's parser.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- parts of a result -----------------------------------------------------


class ModelRef(_Payload):
    """Which model produced the result."""

    name: str = Field(description="Catalog name, or the model file's stem.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the model file.")


class FrameRef(_Payload):
    """The frame a video result was computed on."""

    id: int = Field(ge=0, description="Frame counter of the source.")
    w: int = Field(gt=0, description="Original frame width, px.")
    h: int = Field(gt=0, description="Original frame height, px.")

    @classmethod
    def of(cls, frame: Frame) -> FrameRef:
        """Reference to a captured frame."""
        return cls(id=frame.id, w=frame.width, h=frame.height)


class Timing(_Payload):
    """Stage durations of this result, milliseconds."""

    pre: Millis = Field(description="Preprocessing, ms.")
    infer: Millis = Field(description="Inference, ms.")
    post: Millis = Field(description="Decoding, ms.")


class DetectionItem(_Payload):
    """One detected object."""

    label: str
    class_id: int = Field(ge=0)
    score: Score
    box: NormBox
    zones: list[str] = Field(
        default_factory=list,
        description="Zones the tracked object is in (debounced); empty for a detection whose "
        "track is not confirmed yet, or without zones.",
    )

    @classmethod
    def of(cls, d: Detection) -> DetectionItem:
        return cls(
            label=d.label, class_id=d.class_id, score=d.score, box=d.box, zones=list(d.zones)
        )


class KeypointItem(_Payload):
    """One keypoint; ``x``/``y`` normalized to the original frame."""

    name: str
    x: Coord
    y: Coord
    score: Score


class PoseItem(_Payload):
    """One person's pose."""

    score: Score
    box: NormBox
    keypoints: list[KeypointItem]
    track_id: int | None = Field(
        None, ge=0, description="Tracker id of this person (pose with a person detector)."
    )

    @classmethod
    def of(cls, p: Pose) -> PoseItem:
        return cls(
            score=p.score,
            box=p.box,
            keypoints=[KeypointItem(name=k.name, x=k.x, y=k.y, score=k.score) for k in p.keypoints],
            track_id=p.track_id,
        )


class ClassItem(_Payload):
    """One audio class score."""

    label: str
    class_id: int = Field(ge=0)
    score: Score

    @classmethod
    def of(cls, c: AudioClass) -> ClassItem:
        return cls(label=c.label, class_id=c.class_id, score=c.score)


class Window(_Payload):
    """The audio window a result was computed on."""

    start: Timestamp
    duration_s: Annotated[float, Field(gt=0.0), AfterValidator(_round3)]


# --- results ---------------------------------------------------------------


def _schema_seq_required(schema: dict[str, Any]) -> None:
    """Publish ``seq`` as a required integer: it is only absent before acceptance."""
    props = schema.get("properties", {})
    if "seq" in props:
        props["seq"].pop("default", None)
    always = [key for key in ("v", "id", "seq") if key in props]
    schema["required"] = always + [k for k in schema.get("required", []) if k not in always]


class _Result(_Payload):
    """Fields common to every result message (version 1)."""

    model_config = ConfigDict(json_schema_extra=_schema_seq_required)

    KIND: ClassVar[ResultKind]

    v: Literal[1] = Field(default=PAYLOAD_VERSION, description="Payload version.")
    id: str = Field(
        default_factory=new_id,
        description="Unique, stable across retries; consumers deduplicate on it.",
    )
    # None until the result is accepted by the outbox (see ResultEnvelope);
    # SkipJsonSchema keeps the published schema a plain integer.
    seq: Annotated[int, Field(ge=0)] | SkipJsonSchema[None] = Field(
        default=None,
        description="Per-device counter over all results, monotonic across restarts; "
        "a gap means a result was lost.",
    )
    ts: Timestamp
    device: Name
    pipeline: Name
    source: Name


class _FrameResult(_Result):
    """Fields common to the results of a model run on one video frame."""

    model: ModelRef
    frame: FrameRef
    timing_ms: Timing


class DetectionResult(_FrameResult):
    """Payload of ``<prefix>/<dev>/<pipeline>/detections``."""

    KIND: ClassVar[ResultKind] = "detections"

    detections: list[DetectionItem]


class PoseResult(_FrameResult):
    """Payload of ``<prefix>/<dev>/<pipeline>/pose``."""

    KIND: ClassVar[ResultKind] = "pose"

    poses: list[PoseItem]


class AudioResult(_Result):
    """Payload of ``<prefix>/<dev>/<pipeline>/audio`` (top-k classes of one window)."""

    KIND: ClassVar[ResultKind] = "audio"

    model: ModelRef
    timing_ms: Timing
    window: Window
    classes: list[ClassItem]


class OffloadResult(_Result):
    """Payload of ``<prefix>/<dev>/<pipeline>/offload``: the cloud verdict on a local result."""

    KIND: ClassVar[ResultKind] = "offload"

    ref: str = Field(description="id of the local result this verdict is about.")
    model: ModelRef = Field(description="The cloud model.")
    frame: FrameRef | None = None
    timing_ms: Timing | None = None
    window: Window | None = None
    detections: list[DetectionItem] | None = None
    poses: list[PoseItem] | None = None
    classes: list[ClassItem] | None = None

    @model_validator(mode="after")
    def _one_verdict(self) -> OffloadResult:
        given = [k for k in ("detections", "poses", "classes") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"an offload verdict carries exactly one of detections/poses/classes, got {given}"
            )
        return self


EventPhase = Literal["start", "update", "end"]
EventType = Literal["object", "sound", "fall", "line"]


class EventMedia(_Payload):
    """Files an event left on the device (paths under ``[events] dir``), if any."""

    snapshot: str | None = Field(None, description="Full-frame JPEG of the event's best frame.")
    crop: str | None = Field(None, description="JPEG of the best frame cropped to the box.")
    clip: str | None = Field(None, description="Video (MP4) or audio (WAV) clip of the event.")
    clip_duration_s: float | None = Field(None, ge=0, description="Clip length, seconds.")


class EventResult(_Result):
    """Payload of ``<prefix>/<dev>/<pipeline>/events``: one phase of an event's life.

    An event has one ``event_id`` from ``start`` through any ``update`` to ``end``
    (a consumer keys its state on it; ``id`` stays the per-message id). ``type``
    says what made it: a tracked ``object``, a ``sound``, a ``fall`` (pose), or a
    ``line`` crossing. Type-specific extras go in ``data``.
    """

    KIND: ClassVar[ResultKind] = "events"

    model: ModelRef | None = None
    event: EventPhase = Field(description="Phase: start, update or end.")
    type: EventType = Field(description="What the event is about.")
    event_id: str = Field(min_length=1, description="Stable from start to end.")
    label: str = Field(min_length=1, description="Label (or label group) of the event.")
    track_id: int | None = Field(None, description="Tracker id, for object and fall events.")
    zones: list[str] = Field(default_factory=list, description="Zones the object is in.")
    start: Timestamp = Field(description="When the event started.")
    end: Timestamp | None = Field(None, description="When it ended (end phase only).")
    duration_s: float = Field(ge=0, description="Seconds from start to this message's ts.")
    score: Score = Field(description="Score at this message's frame or window.")
    top_score: Score = Field(description="Best score since the start.")
    box: NormBox | None = Field(None, description="Box in the best frame (video events).")
    media: EventMedia | None = Field(None, description="Files kept on the device.")
    data: dict[str, JsonValue] = Field(default_factory=dict, description="Type-specific extras.")


AnyResult = DetectionResult | PoseResult | AudioResult | OffloadResult | EventResult


# --- zones (retained state, not results: no id, no seq) ------------------------


class ZoneState(_Payload):
    """Retained payload of ``<prefix>/<dev>/<pipeline>/zones/<zone>``, sent when it changes."""

    v: Literal[1] = PAYLOAD_VERSION
    ts: Timestamp = Field(description="Capture time of the frame that changed the zone.")
    device: Name
    pipeline: Name
    source: Name
    zone: Name
    frame: int = Field(ge=0, description="Id of the frame that changed the zone.")
    occupied: bool = Field(description="At least one object is in the zone.")
    count: int = Field(ge=0, description="Objects in the zone, all labels.")
    counts: dict[str, Annotated[int, Field(ge=0)]] = Field(
        description="Objects by label; a label once seen (or listed in the zone) stays, at 0."
    )


#: Payload of ``…/zones/<zone>/occupancy`` (plain text, retained).
ZoneOccupancy = Literal["ON", "OFF"]
#: Payload of ``…/zones/<zone>/count`` and ``…/count/<label>`` (a plain decimal integer, retained).
ZoneCount = Annotated[int, Field(ge=0)]


# --- availability (plain text, retained) ----------------------------------------

#: Payload of ``<prefix>/<dev>/availability``: ``online`` once connected,
#: ``stopped`` on a clean exit, ``offline`` as the broker's Last Will.
Availability = Literal["online", "stopped", "offline"]


def availability_payload(value: Availability) -> bytes:
    """The bytes of an ``availability`` message: the bare word, no JSON quotes.

    Plain text because Home Assistant's ``availability_topic`` compares the
    payload with ``payload_available`` as is.
    """
    return value.encode("ascii")


# --- builders from stage values ---------------------------------------------


def detections_result(
    *,
    device: str,
    pipeline: str,
    model: ModelRef,
    frame: Frame,
    timing: Timing,
    detections: Iterable[Detection],
) -> DetectionResult:
    """Build a detection result for ``frame`` (``ts``, ``source`` and size come from it)."""
    items = [DetectionItem.of(d) for d in detections]
    return DetectionResult(**_run_on(frame, device, pipeline, model, timing), detections=items)


def pose_result(
    *,
    device: str,
    pipeline: str,
    model: ModelRef,
    frame: Frame,
    timing: Timing,
    poses: Iterable[Pose],
) -> PoseResult:
    """Build a pose result for ``frame``."""
    return PoseResult(
        **_run_on(frame, device, pipeline, model, timing), poses=[PoseItem.of(p) for p in poses]
    )


def _run_on(
    frame: Frame, device: str, pipeline: str, model: ModelRef, timing: Timing
) -> dict[str, Any]:
    """The :class:`_FrameResult` fields of a model run on ``frame``."""
    return {
        "ts": iso_utc(frame.ts),
        "device": device,
        "pipeline": pipeline,
        "source": frame.source,
        "model": model,
        "frame": FrameRef.of(frame),
        "timing_ms": timing,
    }


def audio_result(
    *,
    device: str,
    pipeline: str,
    source: str,
    model: ModelRef,
    window_start: float,
    window_s: float,
    timing: Timing,
    classes: Sequence[AudioClass],
) -> AudioResult:
    """Build an audio result for the window starting at ``window_start`` (epoch seconds)."""
    start = iso_utc(window_start)
    return AudioResult(
        ts=start,
        device=device,
        pipeline=pipeline,
        source=source,
        model=model,
        timing_ms=timing,
        window=Window(start=start, duration_s=window_s),
        classes=[ClassItem.of(c) for c in classes],
    )


# --- state -------------------------------------------------------------------


class PipelineState(_Payload):
    """One pipeline as seen in ``state``."""

    status: Literal["running", "degraded", "disabled", "down"]
    reason: str | None = Field(
        None,
        description="Why it is not running; for 'degraded' (a stage keeps failing): "
        "the failure count and the last error.",
    )
    threshold: Score | None = Field(
        None, description="Minimum reported score now (set_threshold changes it)."
    )


class SourceState(_Payload):
    """One capture source as seen in ``state``."""

    status: Literal["running", "down"]
    reason: str | None = None
    fps: Annotated[float, Field(ge=0.0), AfterValidator(_round2)] | None = None


class ModelState(_Payload):
    """One loaded model as seen in ``state``."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    runtime: str = Field(description="e.g. 'ai-edge-litert 2.3.0'.")
    accelerator: str = Field(
        "cpu", description="Where it runs: 'cpu', 'xnnpack', 'openvino', 'cuda', ... (resolved)."
    )


class LinkState(_Payload):
    """The cloud link as seen by the link monitor."""

    status: Literal["up", "degraded", "down", "disabled"]
    rtt_ms: Millis | None = None
    reason: str | None = None


class OutboxState(_Payload):
    """The durable outbox as seen in ``state``."""

    status: Literal["durable", "degraded"] = Field(
        "durable", description="durable: every result is stored until its PUBACK."
    )
    reason: str | None = Field(None, description="Why it is degraded, and what happens meanwhile.")
    error: str | None = Field(
        None, description="The storage fault's errno name: ENOSPC, EROFS, EIO, EACCES, …"
    )
    quarantined: list[str] = Field(
        default_factory=list,
        description="Unusable outbox files moved aside since the start, each with the reason.",
    )


class MqttState(_Payload):
    """The broker session, for what the broker cannot tell anyone itself."""

    status: Literal["up", "degraded", "down"]
    problem: str | None = Field(
        None, description="Why degraded: a duplicate client id, unpublishable messages dropped."
    )
    dropped: int = Field(0, ge=0, description="Messages dropped as unpublishable since start.")
    takeovers: int = Field(
        0, ge=0, description="Sessions taken over by a client with the same client id."
    )


class State(_Payload):
    """Retained payload of ``<prefix>/<dev>/state``; re-published on every (re)connect."""

    # Fields with defaults are always written, so the published schema requires them.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    v: Literal[1] = PAYLOAD_VERSION
    ts: Timestamp
    device: Name
    version: str = Field(description="edged version.")
    uptime_s: Annotated[float, Field(ge=0.0), AfterValidator(_round1)]
    pipelines: dict[str, PipelineState] = Field(default_factory=dict)
    sources: dict[str, SourceState] = Field(default_factory=dict)
    models: dict[str, ModelState] = Field(default_factory=dict)
    link: LinkState = Field(default_factory=lambda: LinkState(status="disabled"))
    outbox: OutboxState = Field(default_factory=OutboxState)
    mqtt: MqttState = Field(default_factory=lambda: MqttState(status="up"))


# --- stats (a sample every stats_interval_s, QoS 0, not retained) -----------------

Count = Annotated[int, Field(ge=0)]
NonNeg = Annotated[float, Field(ge=0.0)]
#: Counts by name: failures by stage, evictions by reason, refusals by errno, ...
Counts = dict[str, Count]
#: What a pipeline's ``stats()`` says its status is (``state`` folds these to four).
PipelineStatus = Literal["starting", "running", "degraded", "disabled", "stopped", "ended"]


class _PipelineStats(_Payload):
    """Fields every pipeline's stats carry, video or audio (README "MQTT topics and payloads")."""

    name: str
    status: PipelineStatus
    reason: str = Field(description="Why it is not running, or the last error while degraded.")
    processed: Count
    gated: Count = Field(description="Frames or windows the gate kept from the model.")
    errors: Count
    failures: Counts = Field(description="Stage failures by stage.")
    infer_p50_ms: NonNeg
    infer_p95_ms: NonNeg
    latency_p50_ms: NonNeg = Field(description="Capture to result, ms.")
    latency_p95_ms: NonNeg
    accelerator: str | None = Field(None, description="Where the pipeline's model runs.")


class StatsVideoPipeline(_PipelineStats):
    """A video pipeline in ``stats`` (``edged.runtime.video.PipelineStats`` + accelerator)."""

    published: Count
    dropped: Count = Field(description="Frames replaced in the slot before the pipeline took them.")
    fps: NonNeg


class StatsAudioPipeline(_PipelineStats):
    """An audio pipeline in ``stats`` (``edged.runtime.audio.AudioPipelineStats`` + accelerator)."""

    skipped: Count = Field(description="Windows skipped to catch up with real time.")
    emitted: Count
    overruns: Count = Field(description="Chunks dropped because the pipeline's queue was full.")
    windows_per_s: NonNeg
    realtime_factor: NonNeg = Field(description="Processing time / audio time; below 1 keeps up.")


class StatsSource(_Payload):
    """A capture source in ``stats``."""

    state: Literal["starting", "up", "down", "ended", "stopped"]
    fps: NonNeg | None = Field(description="Delivered frames per second; null for audio.")


class StatsMqtt(_Payload):
    """The ``mqtt`` section of ``stats`` (``MqttClient.stats``)."""

    connected: bool
    disconnects: Count
    dropped_unpublishable: Count
    takeovers: Count
    problem: str | None


class StatsOutbox(_Payload):
    """The ``outbox`` section of ``stats`` (``edged.publish.outbox.OutboxStats``)."""

    depth: Count = Field(description="Rows stored, awaiting PUBACK.")
    bytes: Count
    unflushed: Count
    accepted: Count
    delivered: Count
    evicted: Count
    evicted_by: Counts = Field(description="size, age, disk_full, invalid, unpublishable, ...")
    refused: Count
    refused_by: Counts = Field(description="ENOSPC, EROFS, EIO, ..., unencodable.")
    passed: Count = Field(description="Results published live because they could not be stored.")
    sent: Count
    resent: Count
    in_flight: Count
    oldest_age_s: NonNeg | None
    last_seq: Count
    status: Literal["durable", "degraded"]
    error: str | None
    free_mb: NonNeg | None
    quarantined: Count


class StatsOffload(_Payload):
    """The ``offload`` section of ``stats`` (``OffloadService.stats``)."""

    link: Literal["up", "degraded", "down"]
    rtt_ms: NonNeg | None
    metered: bool
    queued: Count
    requests: Count
    probes: Count
    tokens: NonNeg
    mb_today: NonNeg
    bytes_today: Count
    decisions: Counts = Field(description="Offload decisions by reason, all pipelines.")
    pipelines: dict[str, Counts] = Field(description="Decisions by reason, per pipeline.")


class StatsEvents(_Payload):
    """The ``events`` section of ``stats`` (``EventRecorder.stats``)."""

    dir: str
    files: Count
    bytes: Count
    evicted: Counts = Field(description="Whole events evicted, by reason (size, age).")
    evicted_bytes: Count
    snapshots: Count
    clips: Count
    published_snapshots: Count
    clip_encoder: Literal["opencv-h264", "ffmpeg-libx264", "opencv-mp4v"] | None
    frames_skipped: Count
    frames_queued: Count
    ended_without_media: Count
    failures: Counts


class Stats(_Payload):
    """Payload of ``<prefix>/<dev>/stats``: one sample of the device's counters.

    The publisher builds every message through this model, so a field a
    component adds to its ``stats()`` fails here (and in the tests) instead of
    reaching consumers unannounced. Absent sections belong to parts that are
    off: ``outbox`` without an outbox file, ``offload`` and ``events`` unless
    configured.
    """

    v: Literal[1] = PAYLOAD_VERSION
    ts: Timestamp
    device: Name
    uptime_s: NonNeg
    pipelines: dict[str, StatsVideoPipeline | StatsAudioPipeline]
    sources: dict[str, StatsSource]
    cpu_percent: NonNeg = Field(description="Process CPU since the last sample, % of one core.")
    rss_mb: NonNeg
    temperature_c: float | None = Field(description="SoC temperature where the kernel has it.")
    mqtt: StatsMqtt
    outbox: StatsOutbox | None = None
    offload: StatsOffload | None = None
    events: StatsEvents | None = None


# --- model rollout (retained) -----------------------------------------------------

RolloutPhase = Literal[
    "downloading",
    "evaluating",
    "probation",
    "done",
    "rolled_back",
    "refused",
    "stepped_down",
    "stepped_up",
]
#: Golden-set numbers of a model (label metrics: accuracy, latency ms, size MB);
#: None where the golden set cannot measure one (no positives of a label, say).
RolloutMetrics = dict[str, float | None]


class ModelId(_Payload):
    """A model as results name it; ``sha256`` is empty until an unpinned download has it."""

    name: str = Field(min_length=1)
    sha256: str = Field("", pattern=r"^([0-9a-f]{64})?$")


class _RolloutFields(_Payload):
    """The fields of a rollout step, in ``…/models/rollout`` and in ``model_update``'s reply."""

    model_config = ConfigDict(populate_by_name=True)

    ts: Timestamp = Field(description="When this phase began.")
    device: Name
    pipeline: Name
    from_: ModelId | None = Field(None, alias="from", description="The model before the switch.")
    to: ModelId = Field(description="The candidate.")
    phase: RolloutPhase
    reason: str = Field("", description="Why this phase (a refusal or a rollback names the bar).")
    require: list[str] = Field(default_factory=list, description="The pipeline's bar.")
    max_latency_ms: float = Field(0.0, ge=0.0)
    metrics: RolloutMetrics = Field(
        default_factory=dict, description="The candidate's golden-set numbers (label metrics)."
    )
    from_metrics: RolloutMetrics = Field(
        default_factory=dict,
        description="Right-sizing: the previous model's golden-set numbers (both labels).",
    )
    probation: dict[Literal["frames", "failures", "latency_p95_ms"], float] = Field(
        default_factory=dict, description="Probation window so far: frames, failures, p95 ms."
    )


class _Version(_Payload):
    v: Literal[1] = PAYLOAD_VERSION


# _Version last: pydantic puts the fields of the last base first, so ``v`` leads.
class RolloutStatus(_RolloutFields, _Version):
    """Retained payload of ``<prefix>/<dev>/models/rollout``: the latest rollout step (docs/rollout.md).

    Phases are published with ``model_copy(update=…)``, which does not
    validate: the live tests validate every message against this model.
    """

    def encode(self) -> bytes:
        """Compact JSON, ``from`` by its alias, absent ``from`` left out."""
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


# --- command replies (docs/commands.md "Reply") ---------------------------------------


class _ReplyHead(_Payload):
    """What every reply starts with."""

    ok: bool
    command: CommandName | None = Field(
        None, description="The command, when the request named one there is."
    )
    id: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        None, description="The request's own id, echoed when it carried a valid one."
    )


class _Done(_ReplyHead):
    ok: Literal[True]


class CommandRefusal(_ReplyHead):
    """``{"ok": false, …}``: the command was refused or failed, and nothing changed."""

    ok: Literal[False]
    error: str = Field(
        pattern=r"^.+?: .",
        description="'<field>: <problem>'; the field is a payload field, payload, command, "
        "response_topic, config, …",
    )
    applied: Literal[False] | None = Field(None, description="A refused reload.")
    problems: list[str] | None = Field(
        None, description="A refused reload: each '<file>: <key>: <problem>'."
    )
    phase: Literal["refused"] | None = Field(None, description="A refused model_update.")
    metrics: RolloutMetrics | None = Field(
        None, description="A refused model_update: the candidate's golden-set numbers."
    )


class PingReply(_Done):
    """Reply to ``ping``."""

    command: Literal["ping"]
    device: Name
    version: str
    uptime_s: Annotated[float, Field(ge=0.0)]


class ToggleReply(_Done):
    """Reply to ``enable``, ``disable`` and ``set_enabled``."""

    command: Literal["enable", "disable", "set_enabled"]
    pipeline: Name
    enabled: bool
    changed: bool = Field(description="False when the pipeline already was so.")


class SetThresholdReply(_Done):
    """Reply to ``set_threshold``."""

    command: Literal["set_threshold"]
    pipeline: Name
    threshold: float = Field(ge=0.0, le=1.0)
    previous: float = Field(ge=0.0, le=1.0)


class ReloadReply(_Done):
    """Reply to an applied ``reload`` (a refused one is a :class:`CommandRefusal`)."""

    command: Literal["reload"]
    applied: Literal[True]
    pipelines: list[Name]
    restart_needed: list[str] = Field(description="Changed keys that need a restart.")


class SnapshotFrame(_Payload):
    """The frame a snapshot was taken of."""

    id: int = Field(ge=0)
    ts: Timestamp
    w: int = Field(gt=0)
    h: int = Field(gt=0)


class SnapshotReply(_Done):
    """Reply to ``snapshot``: the JPEG went to ``topic``."""

    command: Literal["snapshot"]
    source: Name
    topic: str
    frame: SnapshotFrame
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    bytes: int = Field(gt=0)


class EventSnapshotReply(_Done):
    """Reply to ``event_snapshot``: the stored JPEG went to ``topic``."""

    command: Literal["event_snapshot"]
    event_id: str = Field(pattern=r"^[0-9A-Za-z_-]{1,64}$")
    pipeline: Name
    crop: bool
    topic: str
    path: str
    bytes: int = Field(gt=0)


# _Done last: ok, command and id lead, as in every reply.
class ModelUpdateReply(_RolloutFields, _Done):
    """Reply to ``model_update`` once switched: the rollout status, without ``v``."""

    command: Literal["model_update"]
    probation_s: float = Field(ge=0.0)


_TOGGLES: Final = ("enable", "disable", "set_enabled")


def _reply_kind(value: Any) -> str | None:
    """The union member a reply is: a refusal, else by its command."""
    if isinstance(value, dict):
        ok, command = value.get("ok"), value.get("command")
    else:
        ok, command = getattr(value, "ok", None), getattr(value, "command", None)
    if ok is not True:
        return "refusal"
    return "toggle" if command in _TOGGLES else command


class CommandReply(
    RootModel[
        Annotated[
            Annotated[CommandRefusal, Tag("refusal")]
            | Annotated[PingReply, Tag("ping")]
            | Annotated[ToggleReply, Tag("toggle")]
            | Annotated[SetThresholdReply, Tag("set_threshold")]
            | Annotated[ReloadReply, Tag("reload")]
            | Annotated[SnapshotReply, Tag("snapshot")]
            | Annotated[EventSnapshotReply, Tag("event_snapshot")]
            | Annotated[ModelUpdateReply, Tag("model_update")],
            Discriminator(_reply_kind),
        ]
    ]
):
    """Payload of ``<prefix>/<dev>/cmd/<command>/reply`` and of MQTT 5 response topics.

    ``{"ok": false, …}`` is a :class:`CommandRefusal`; a success is the
    model of its command, so a field a command adds to its reply without
    adding it here fails validation (docs/commands.md "Reply").
    """

    model_config = ConfigDict(frozen=True)


# --- bytes on the wire ---------------------------------------------------------


def encode(payload: BaseModel) -> bytes:
    """Compact UTF-8 JSON of a payload, leaving out absent optional fields.

    Results must go through :meth:`ResultEnvelope.with_seq` instead, so that
    no result is ever published without its ``seq``.
    """
    if isinstance(payload, _Result) and payload.seq is None:
        raise ValueError("a result has no seq before it is accepted: use ResultEnvelope.with_seq")
    return payload.model_dump_json(exclude_none=True).encode()


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message, immutable from acceptance to PUBACK.

    ``id`` is the result id for result messages (the outbox's deduplication
    key) and None otherwise. ``expiry_s`` becomes the MQTT 5 Message Expiry
    Interval; the broker drops the message if no subscriber took it in time.
    """

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    id: str | None = None
    expiry_s: int | None = None

    def __post_init__(self) -> None:
        if self.qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {self.qos!r}")
        if self.expiry_s is not None and self.expiry_s < 1:
            raise ValueError(f"expiry_s must be at least 1 second, not {self.expiry_s!r}")


@dataclass(frozen=True, slots=True)
class ResultEnvelope:
    """A result with its topic, waiting for a ``seq``: what pipelines hand to the outbox.

    The outbox assigns ``seq`` in the same transaction as it stores the row::

        with db:                                   # one SQLite transaction
            seq = next_seq(db)                     # persisted counter
            msg = envelope.with_seq(seq)
            db.execute("INSERT …", (seq, msg.id, msg.topic, msg.payload, …))
    """

    topic: str
    result: AnyResult
    expiry_s: int | None = None

    QOS: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if self.result.seq is not None:
            raise ValueError("the result already has a seq; seq is assigned once, on acceptance")

    @classmethod
    def of(cls, topics: Topics, result: AnyResult, expiry_s: int | None = None) -> ResultEnvelope:
        """Wrap ``result`` for the topic of its pipeline and kind."""
        return cls(topics.result(result.pipeline, result.KIND), result, expiry_s)

    @property
    def id(self) -> str:
        """The result's id, fixed when the result was built."""
        return self.result.id

    def with_seq(self, seq: int) -> Message:
        """Serialize with ``seq`` into the immutable :class:`Message` to store and send."""
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValueError(f"seq must be a non-negative integer, not {seq!r}")
        payload = encode(self.result.model_copy(update={"seq": seq}))
        return Message(self.topic, payload, self.QOS, False, self.id, self.expiry_s)


def payload_json_schemas() -> dict[str, dict[str, Any]]:
    """JSON schemas of every published JSON payload, keyed by topic kind (for the docs)."""
    models: dict[str, type[BaseModel]] = {
        "detections": DetectionResult,
        "pose": PoseResult,
        "audio": AudioResult,
        "offload": OffloadResult,
        "events": EventResult,
        "state": State,
        "stats": Stats,
        "zone": ZoneState,
        "rollout": RolloutStatus,
        "reply": CommandReply,
    }
    return {kind: m.model_json_schema(mode="serialization") for kind, m in models.items()}
