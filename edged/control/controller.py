"""What each command does to the running daemon.

The daemon's command side, kept out of ``app.py`` so that the App stays
wiring. It works on the *current* graph, held steady through the
:class:`~edged.runtime.runtime.Runtime` (a reload may swap the graph between
two commands), and on the few collaborators of :class:`~edged.control.wiring.Wiring`;
changes made here (enabled, threshold) last until the next reload or
restart, since the configuration file stays the one source of truth.

Every method returns the fields of a successful reply or raises
:class:`~edged.errors.CommandError` naming the field that was wrong.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final, cast

import cv2
import numpy as np
import numpy.typing as npt
import structlog

from edged import __version__
from edged.control.commands import (
    Command,
    Disable,
    Enable,
    EventSnapshot,
    ModelUpdate,
    Ping,
    Reload,
    SetEnabled,
    SetThreshold,
    Snapshot,
    show,
)
from edged.errors import CommandError
from edged.publish.payloads import iso_utc

if TYPE_CHECKING:
    from edged.control.wiring import Wiring
    from edged.runtime.audio import AudioPipeline
    from edged.runtime.graph import Graph
    from edged.runtime.video import Pipeline

log = structlog.get_logger(__name__)

#: A reload runs on the main loop; a reply that takes longer says so instead of hanging.
RELOAD_TIMEOUT_S: Final = 60.0
DISABLED_REASON: Final = "disabled by command"


def encode_jpeg(
    image: npt.NDArray[np.uint8], quality: int, max_side: int | None
) -> tuple[bytes, int, int]:
    """JPEG bytes of an RGB ``image`` scaled down to ``max_side`` (never up), and their size.

    Works on new arrays only: the frame's own image is shared with the
    pipelines and must not be written to.
    """
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(w, h)) if max_side else 1.0
    if scale < 1.0:
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
        # INTER_AREA averages the pixels a downscale folds together (no aliasing).
        image = cast(
            "npt.NDArray[np.uint8]", cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        )
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise CommandError("source", "the frame could not be JPEG-encoded")
    return buf.tobytes(), w, h


class Controller:
    """Runs validated commands against one daemon's runtime."""

    def __init__(self, wiring: Wiring) -> None:
        self._wiring = wiring
        self._runtime = wiring.runtime

    def execute(self, command: Command) -> dict[str, Any]:  # noqa: PLR0911  one per command
        """Run ``command``; the fields of its success reply."""
        match command:
            case Enable() | Disable() | SetEnabled():
                return self._toggle(command)
            case SetThreshold(pipeline=name, threshold=threshold):
                return self.set_threshold(name, threshold)
            case Snapshot(source=name, quality=quality, max_side=max_side):
                return self.snapshot(name, quality, max_side)
            case EventSnapshot(event_id=event_id, crop=crop):
                return self.event_snapshot(event_id, crop=crop)
            case Reload():
                return self.reload()
            case ModelUpdate(pipeline=name, model=model, sha256=sha256, url=url):
                return self._wiring.model_update(name, model, sha256, url)
            case Ping():
                return self.ping()
        raise CommandError("command", f"{command.NAME!r} has no handler")  # pragma: no cover

    def _toggle(self, command: Enable | Disable | SetEnabled) -> dict[str, Any]:
        """``enable``, ``disable`` and ``set_enabled`` (one topic for both: Home Assistant's switch)."""
        match command:
            case Disable(pipeline=name, reason=reason):
                return self.set_enabled(name, enabled=False, reason=reason)
            case SetEnabled(pipeline=name, enabled=enabled):
                return self.set_enabled(name, enabled=enabled)
        return self.set_enabled(command.pipeline, enabled=True)

    @staticmethod
    def _pipeline(graph: Graph, name: str) -> Pipeline | AudioPipeline:
        """``graph``'s pipeline ``name`` (hold it with ``Runtime.current``)."""
        found = graph.pipelines.get(name)
        if found is None:
            known = ", ".join(sorted(graph.pipelines)) or "none"
            raise CommandError("pipeline", f"no pipeline named {show(name)} (pipelines: {known})")
        return found

    def set_enabled(self, name: str, *, enabled: bool, reason: str | None = None) -> dict[str, Any]:
        """Enable or disable a pipeline; ``state`` shows a disabled one with its reason."""
        with self._runtime.current() as graph:
            pipeline = self._pipeline(graph, name)
            # Under the emit gate: a result computed before the flip cannot be
            # published after the reply.
            changed = self._runtime.set_enabled(
                pipeline, enabled, "" if enabled else (reason or DISABLED_REASON)
            )
        self._wiring.publish_state()
        log.info(
            "pipeline.enabled" if enabled else "pipeline.disabled", pipeline=name, reason=reason
        )
        return {"pipeline": name, "enabled": enabled, "changed": changed}

    def set_threshold(self, name: str, threshold: float) -> dict[str, Any]:
        """Set a pipeline's minimum reported score; frames taken from now on use it."""
        with self._runtime.current() as graph:
            pipeline = self._pipeline(graph, name)
            previous = pipeline.threshold
            pipeline.threshold = threshold
        self._wiring.publish_state()  # the threshold is in ``state`` (Home Assistant's number reads it)
        log.info("pipeline.threshold_set", pipeline=name, threshold=threshold, previous=previous)
        return {"pipeline": name, "threshold": threshold, "previous": previous}

    def snapshot(self, name: str, quality: int, max_side: int | None) -> dict[str, Any]:
        """Publish a JPEG of video source ``name``'s latest frame (QoS 1, not retained)."""
        with self._runtime.current() as graph:
            source = graph.video.get(name)
            if source is None:
                if name in graph.audio:
                    raise CommandError(
                        "source", f"{show(name)} is an audio source; snapshots need a video source"
                    )
                known = ", ".join(sorted(graph.video)) or "none"
                raise CommandError("source", f"no video source named {show(name)} (video: {known})")
            frame = source.latest()
            status = source.status
        if frame is None:
            why = f"{status.state}: {status.reason}" if status.reason else status.state
            raise CommandError("source", f"{name!r} has not delivered a frame yet ({why})")
        jpeg, width, height = encode_jpeg(frame.image, quality, max_side)
        mqtt = self._wiring.mqtt
        topic = mqtt.topics.snapshot(name)
        mqtt.publish(topic, jpeg, qos=1, retain=False)
        return {
            "source": name,
            "topic": topic,
            "frame": {"id": frame.id, "ts": iso_utc(frame.ts), "w": frame.width, "h": frame.height},
            "width": width,
            "height": height,
            "bytes": len(jpeg),
        }

    def event_snapshot(self, event_id: str, *, crop: bool) -> dict[str, Any]:
        """Publish an ended event's stored JPEG (QoS 1, not retained) on its snapshot topic."""
        recorder = self._wiring.recorder
        if recorder is None:
            raise CommandError(
                "event_id", "event media are not kept on this device ([events] snapshots = false)"
            )
        files = recorder.store.find(event_id)
        path = files.get("crop" if crop else "snapshot")
        if path is None:
            raise CommandError(
                "event_id",
                f"no snapshot stored for event {show(event_id)} (unknown, still open, "
                "or evicted from the store)",
            )
        try:
            jpeg = path.read_bytes()
        except FileNotFoundError:  # evicted between find and read
            raise CommandError("event_id", f"event {show(event_id)} was just evicted") from None
        pipeline = path.parent.name
        topic = self._wiring.mqtt.topics.event_snapshot(pipeline, event_id)
        self._wiring.mqtt.publish(topic, jpeg, qos=1, retain=False)
        return {
            "event_id": event_id,
            "pipeline": pipeline,
            "crop": crop,
            "topic": topic,
            "path": str(path),
            "bytes": len(jpeg),
        }

    def reload(self) -> dict[str, Any]:
        """Reload the configuration through the main loop, exactly as SIGHUP does."""
        try:
            outcome = self._wiring.request_reload().result(timeout=RELOAD_TIMEOUT_S)
        except TimeoutError:
            raise CommandError(
                "reload", f"not finished within {RELOAD_TIMEOUT_S:g} s; see the daemon's log"
            ) from None
        if not outcome.applied:
            raise CommandError(
                "config",
                "; ".join(outcome.problems) + " (the previous configuration keeps running)",
                applied=False,
                problems=list(outcome.problems),
            )
        with self._runtime.current() as graph:
            pipelines = sorted(graph.pipelines)
        return {
            "applied": True,
            "pipelines": pipelines,
            "restart_needed": list(outcome.restart_needed),
        }

    def ping(self) -> dict[str, Any]:
        """Version and uptime: a cheap liveness check of the whole command path."""
        return {
            "device": self._wiring.settings().device_id,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self._wiring.started_mono, 3),
        }
