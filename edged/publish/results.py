"""From pipeline results to MQTT messages: payloads, topics, and the sink that accepts them.

Pipelines never talk to MQTT directly. They hand a result to
:class:`ResultPublisher`, which builds the payload (assigning its ``id``) and
passes a :class:`ResultEnvelope` to a :class:`Sink`. The sink *accepts* the
result: it assigns ``seq`` and owns delivery from then on. The durable
SQLite outbox (README "Delivery guarantees") is the sink the daemon uses.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from edged.catalog.resolve import ResolvedModel
from edged.config.settings import Settings
from edged.errors import EdgedError
from edged.label.nutrition import published_label
from edged.publish.mqtt import MqttClient
from edged.publish.payloads import (
    DetectionResult,
    EventMedia,
    EventResult,
    Message,
    ModelRef,
    ModelState,
    PoseResult,
    ResultEnvelope,
    State,
    Stats,
    Timing,
    ZoneState,
    audio_result,
    detections_result,
    encode,
    iso_utc,
    new_id,
    pose_result,
)
from edged.tasks import VisionResult
from edged.tasks.audio import AudioTaskResult
from edged.track.tracker import TrackEvent
from edged.types import Box, Detection, EventNote, Frame, Pose
from edged.zones.stage import ZoneUpdate

if TYPE_CHECKING:
    from edged.publish.outbox import Outbox

log = structlog.get_logger(__name__)


# What the publisher reads of objects from the layers above it (events/,
# runtime/): small Protocols here, so that publish imports nothing upward.
class BestFrame(Protocol):
    """A live track's best frame so far (events/snapshots.py's ``Best``)."""

    @property
    def score(self) -> float: ...
    @property
    def box(self) -> Box: ...


class EventHooks(Protocol):
    """The event recorder (events/recorder.py) as the publisher calls it."""

    def opened(self, pipeline: str, track_id: int, event_id: str, start: float) -> None: ...
    def top(self, pipeline: str, track_id: int) -> BestFrame | None: ...
    def ended(self, pipeline: str, track_id: int, payload: EventResult, end: float) -> None: ...


class _HasStats(Protocol):
    def stats(self) -> Any: ...


class _SourceState(Protocol):
    @property
    def state(self) -> str: ...
    @property
    def fps(self) -> float | None: ...


class _Loaded(Protocol):
    @property
    def accelerator(self) -> str: ...


class StatsGraph(Protocol):
    """The running graph (runtime/graph.py) as ``stats`` reads it."""

    @property
    def pipelines(self) -> Mapping[str, _HasStats]: ...
    @property
    def models(self) -> Mapping[str, tuple[object, _Loaded]]: ...
    def sources(self) -> Mapping[str, _SourceState]: ...


#: A track's zones at the frame being published (``Occupancy.zones_of``).
ZonesOf = Callable[[int], tuple[str, ...]]


@dataclasses.dataclass(slots=True)
class _OpenEvent:
    """An object event between its start and end: its id and its best frame so far."""

    event_id: str
    top_score: float
    box: tuple[float, float, float, float]


class Sink(Protocol):
    """Accepts results for delivery; assigns ``seq``."""

    def accept(self, envelope: ResultEnvelope) -> None: ...


class ResultPublisher:
    """Builds payloads for every result kind and publishes state and stats."""

    def __init__(self, settings: Settings, mqtt: MqttClient, sink: Sink) -> None:
        self._settings = settings
        self._mqtt = mqtt
        self.topics = mqtt.topics
        self.sink = sink
        self._models: dict[str, ResolvedModel] = {}
        self._refs: dict[str, ModelRef] = {}
        # Object events still open, by (pipeline, track id).
        self._events: dict[tuple[str, int], _OpenEvent] = {}
        #: Keeps events' best frames and writes their media (``[events]``); None: no media.
        self.recorder: EventHooks | None = None
        self._runtimes: dict[str, str] = {}
        self._accelerators: dict[str, str] = {}  # model name → the accelerator it runs on
        self._labelled: set[str] = set()  # models whose label is retained on the broker
        self._cpu_mark: tuple[float, float] = (0.0, time.monotonic())
        #: Extra top-level sections of ``stats`` (``offload``, ``events``), each built by its
        #: owner; :class:`~edged.publish.payloads.Stats` lists the sections it accepts.
        self.stats_sections: dict[str, Callable[[], dict[str, Any]]] = {}

    def register_model(
        self, pipeline: str, resolved: ResolvedModel, runtime: str, accelerator: str = "cpu"
    ) -> None:
        """Remember which model a pipeline runs, and where (for payloads, labels and ``state``)."""
        self._models[pipeline] = resolved
        self._refs[pipeline] = ModelRef(name=resolved.name, sha256=resolved.sha256)
        self._runtimes[resolved.name] = runtime
        self._accelerators[resolved.name] = accelerator

    def publish_result(self, pipeline: str, frame: Frame, result: VisionResult) -> str:
        """Build the payload of one vision result and hand it to the sink; returns its ``id``."""
        t = result.timing
        timing = Timing(pre=t.pre, infer=t.infer, post=t.post)
        common: dict[str, Any] = {
            "device": self._settings.device_id,
            "pipeline": pipeline,
            "model": self._refs[pipeline],
            "frame": frame,
            "timing": timing,
        }
        payload: PoseResult | DetectionResult
        if result.kind == "pose":
            payload = pose_result(poses=[p for p in result.items if isinstance(p, Pose)], **common)
        else:
            payload = detections_result(
                detections=[d for d in result.items if isinstance(d, Detection)], **common
            )
        self.sink.accept(ResultEnvelope.of(self.topics, payload))
        return payload.id

    def publish_events(
        self,
        pipeline: str,
        frame: Frame,
        events: list[TrackEvent],
        zones_of: ZonesOf | None = None,
    ) -> None:
        """Publish tracker events as object events (``start`` / ``update`` / ``end``) on
        ``…/<pipeline>/events``; ``event_id`` is stable for the track's whole life.
        ``zones_of`` names each track's zones at this frame (pipelines with zones).

        With a :attr:`recorder`, ``top_score`` and ``box`` come from the best
        frame of every frame the track was seen in, and the ``end`` is handed
        to the recorder, which publishes it once the event's media are written.
        """
        # The tracker measures time in frame.mono; payloads carry wall-clock time.
        wall = frame.ts - frame.mono
        for e in events:
            t = e.track
            key = (pipeline, t.id)
            if e.kind == "new" or key not in self._events:
                self._events[key] = _OpenEvent(new_id(), t.score, t.box)
                if self.recorder is not None:
                    self.recorder.opened(
                        pipeline, t.id, self._events[key].event_id, t.first_ts + wall
                    )
            ev = self._events[key]
            if t.score > ev.top_score:  # the best frame so far names the event's box
                ev.top_score, ev.box = t.score, t.box
            best = self.recorder.top(pipeline, t.id) if self.recorder is not None else None
            if best is not None and best.score >= ev.top_score:
                ev.top_score, ev.box = best.score, best.box
            if e.kind == "end":
                del self._events[key]
            payload = EventResult(
                ts=iso_utc(frame.ts),
                device=self._settings.device_id,
                pipeline=pipeline,
                source=frame.source,
                model=self._refs.get(pipeline),
                event="start" if e.kind == "new" else e.kind,
                type="object",
                event_id=ev.event_id,
                label=t.label,
                track_id=t.id,
                zones=list(zones_of(t.id)) if zones_of is not None else [],
                start=iso_utc(t.first_ts + wall),
                end=iso_utc(t.last_ts + wall) if e.kind == "end" else None,
                duration_s=round(max(0.0, t.last_ts - t.first_ts), 2),
                score=t.score,
                top_score=ev.top_score,
                box=ev.box,
                data={"hits": t.hits, "frame": frame.id},
            )
            if e.kind == "end" and self.recorder is not None:
                self.recorder.ended(pipeline, t.id, payload, t.last_ts + wall)
            else:
                self.publish_event(payload)

    def publish_event(self, payload: EventResult) -> None:
        """Hand one event message to the sink (also the recorder's way to publish an ``end``)."""
        self.sink.accept(ResultEnvelope.of(self.topics, payload))

    def publish_note(self, pipeline: str, source: str, note: EventNote) -> None:
        """Publish one phase of a sound or fall event on ``…/<pipeline>/events``."""
        c = note.change
        media = (
            EventMedia(clip=note.clip, clip_duration_s=note.clip_s)
            if note.clip is not None
            else None
        )
        payload = EventResult(
            ts=iso_utc(c.ts),
            device=self._settings.device_id,
            pipeline=pipeline,
            source=source,
            model=self._refs.get(pipeline),
            event=c.phase,
            type=note.type,
            event_id=c.event_id,
            label=note.label,
            track_id=note.track_id,
            start=iso_utc(c.start),
            end=iso_utc(c.end) if c.end is not None else None,
            duration_s=round(max(0.0, (c.end if c.end is not None else c.ts) - c.start), 2),
            score=min(1.0, max(0.0, c.score)),
            top_score=min(1.0, max(0.0, c.top_score)),
            box=note.box,
            media=media,
            data=note.data,
        )
        self.sink.accept(ResultEnvelope.of(self.topics, payload))

    def publish_zones(
        self, pipeline: str, frame: Frame, update: ZoneUpdate, zones_of: ZonesOf
    ) -> None:
        """Publish what a frame changed in a pipeline's zones (README "Zones").

        Each changed zone's retained state (JSON, occupancy ``ON``/``OFF``, total
        and per-label counts) goes straight to MQTT, QoS 1: it is current state,
        which the next change replaces, not a result to queue in the outbox.
        Each line crossing is one ``line`` event through the sink, like every
        event: a crossing has no duration, so it is a single message with
        ``event = "start"`` and ``end`` already set to the same time.
        """
        device = self._settings.device_id
        for zc in update.changed:
            state = ZoneState(
                ts=iso_utc(frame.ts),
                device=device,
                pipeline=pipeline,
                source=frame.source,
                zone=zc.zone,
                frame=frame.id,
                occupied=zc.occupied,
                count=zc.total,
                counts=zc.counts,
            )
            top = self.topics
            messages = [
                (top.zone(pipeline, zc.zone), encode(state)),
                (top.zone_occupancy(pipeline, zc.zone), b"ON" if zc.occupied else b"OFF"),
                (top.zone_count(pipeline, zc.zone), str(zc.total).encode()),
            ]
            messages += [
                (top.zone_count(pipeline, zc.zone, label), str(n).encode())
                for label, n in sorted(zc.counts.items())
            ]
            for topic, payload in messages:
                self._mqtt.send(Message(topic, payload, qos=1, retain=True))
        for c in update.crossings:
            t = c.track
            at = iso_utc(frame.ts)
            event = EventResult(
                ts=at,
                device=device,
                pipeline=pipeline,
                source=frame.source,
                model=self._refs.get(pipeline),
                event="start",
                type="line",
                event_id=new_id(),
                label=t.label,
                track_id=t.id,
                zones=list(zones_of(t.id)),
                start=at,
                end=at,
                duration_s=0.0,
                score=t.score,
                top_score=t.score,
                box=t.box,
                data={"line": c.line, "direction": c.direction, "frame": frame.id},
            )
            self.sink.accept(ResultEnvelope.of(self.topics, event))

    def publish_audio(
        self, pipeline: str, source: str, start: float, duration: float, result: AudioTaskResult
    ) -> None:
        """Build the payload of one audio window's result and hand it to the sink."""
        t = result.timing
        payload = audio_result(
            device=self._settings.device_id,
            pipeline=pipeline,
            source=source,
            model=self._refs[pipeline],
            window_start=start,
            window_s=duration,
            timing=Timing(pre=t.pre, infer=t.infer, post=t.post),
            classes=result.classes,
        )
        self.sink.accept(ResultEnvelope.of(self.topics, payload))

    def publish_labels(self, models_dir: Path) -> None:
        """Publish each registered model's nutrition label, retained (README "MQTT topics and payloads", docs/nutrition-labels.md).

        Called at start and after a reload. The stored label (``edged models
        bench``) is published when it is for this very file, else the static
        part with ``measured: false``. A model no longer loaded gets an empty
        retained message, which deletes its label from the broker, so a
        subscriber never reads a label for a model this device stopped running.
        """
        current: dict[str, ResolvedModel] = {r.name: r for r in self._models.values()}
        for name in sorted(self._labelled - current.keys()):
            self._mqtt.send(Message(self.topics.label(name), b"", qos=1, retain=True))
        for name, resolved in sorted(current.items()):
            try:
                payload = published_label(
                    resolved, self._runtimes[name], models_dir, self._accelerators[name]
                )
            except (EdgedError, OSError) as exc:  # a label must never stop the daemon
                log.warning("label.not_published", model=name, error=str(exc))
                continue
            self._mqtt.send(Message(self.topics.label(name), payload, qos=1, retain=True))
        self._labelled = set(current)

    def clear_models(self) -> None:
        """Forget registered models (before a reload registers the new graph's)."""
        self._models.clear()
        self._refs.clear()
        self._runtimes.clear()
        self._accelerators.clear()

    def model_summary(self) -> dict[str, ModelState]:
        return {
            r.name: ModelState(
                sha256=r.sha256,
                runtime=self._runtimes[r.name],
                accelerator=self._accelerators[r.name],
            )
            for r in self._models.values()
        }

    def publish_state(self, state: State) -> None:
        """Publish the retained ``state`` document."""
        self._mqtt.send(Message(self.topics.state, encode(state), qos=1, retain=True))

    def publish_stats(self, graph: StatsGraph, outbox: Outbox | None, started_mono: float) -> None:
        """Publish one ``stats`` message (QoS 0: a lost sample is replaced by the next)."""
        stats = self.stats(graph, outbox, started_mono)
        # exclude_unset: a key is in the message exactly when its owner reported it
        # (an explicit null included), as before the model; the model forbids the rest.
        payload = stats.model_dump_json(exclude_unset=True).encode()
        self._mqtt.send(Message(self.topics.stats, payload, qos=0))

    def stats(self, graph: StatsGraph, outbox: Outbox | None, started_mono: float) -> Stats:
        """The ``stats`` payload: per-pipeline rates and latencies, outbox, process.

        Built through :class:`~edged.publish.payloads.Stats`, so a section that
        no longer fits the published schema fails here, not at a consumer.
        """
        usage = resource.getrusage(resource.RUSAGE_SELF)
        now = time.monotonic()
        cpu_s = usage.ru_utime + usage.ru_stime
        last_cpu, last_t = self._cpu_mark
        self._cpu_mark = (cpu_s, now)
        doc: dict[str, Any] = {
            "v": 1,
            "ts": iso_utc(time.time()),
            "device": self._settings.device_id,
            "uptime_s": round(now - started_mono, 1),
            "pipelines": {
                n: vars_of(p.stats()) | _accelerator_of(graph, n)
                for n, p in graph.pipelines.items()
            },
            "sources": {n: {"state": v.state, "fps": v.fps} for n, v in graph.sources().items()},
            "cpu_percent": round(100 * (cpu_s - last_cpu) / (now - last_t), 1)
            if now > last_t
            else 0.0,
            "rss_mb": round(_rss_mb(), 1),
            "temperature_c": soc_temperature(),
            "mqtt": self._mqtt.stats(),
        }
        if outbox is not None:
            doc["outbox"] = vars_of(outbox.stats())
        for key, section in self.stats_sections.items():
            doc[key] = section()
        return Stats.model_validate(doc)


def _accelerator_of(graph: StatsGraph, pipeline: str) -> dict[str, str]:
    """``{"accelerator": ...}`` of the model a pipeline runs (stats name it per pipeline)."""
    loaded = graph.models.get(pipeline)
    return {} if loaded is None else {"accelerator": loaded[1].accelerator}


def vars_of(obj: Any) -> dict[str, Any]:
    """Fields of a dataclass instance as a plain dict."""
    return dataclasses.asdict(obj)


def soc_temperature() -> float | None:
    """The SoC temperature in °C where the kernel exposes it (Pi, Jetson), else None."""
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*/temp")):
        try:
            return round(int(zone.read_text()) / 1000, 1)
        except (OSError, ValueError):
            continue
    return None


def _rss_mb() -> float:
    try:
        with open(f"/proc/{os.getpid()}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0
