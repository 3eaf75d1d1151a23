"""The processing graph: capture sources and the pipelines reading them.

Built from settings plus the models the pre-flight check already loaded, so
that a reload can build a new graph, and swap it in only once it is whole.
One source object per configured source, however many pipelines read it:
frames and audio chunks are fanned out, never captured twice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

import structlog

from edged.capture.audio import AudioSource
from edged.capture.audio_factory import open_audio_source
from edged.capture.base import VideoSource
from edged.capture.factory import open_video_source
from edged.config.settings import PipelineSettings, Settings
from edged.events.onoff import EmitNote
from edged.runtime.audio import AudioEmit, AudioPipeline, AudioTaskLike
from edged.runtime.video import Emit, EmitEvents, Pipeline
from edged.sched import fills_every_core
from edged.tasks import VisionTask, build_task
from edged.tasks.detection import DetectionTask
from edged.tasks.pose import PoseTask, TwoStagePoseTask

if TYPE_CHECKING:
    from edged.catalog.resolve import ResolvedModel
    from edged.infer.base import Model

log = structlog.get_logger(__name__)

AUDIO_KINDS = frozenset({"microphone", "wav"})


class LoadedModels(Protocol):
    """The models a pre-flight check loaded, by pipeline name (the daemon's Preflight)."""

    @property
    def models(self) -> Mapping[str, tuple[ResolvedModel, Model]]:
        """Each pipeline's model."""
        ...

    @property
    def detectors(self) -> Mapping[str, tuple[ResolvedModel, Model]]:
        """The person detector of each pose pipeline that names one."""
        ...


@dataclass(frozen=True, slots=True)
class SourceView:
    """A source's state, the same for video and audio sources."""

    name: str
    kind: str
    state: str  # starting | up | down | ended | stopped
    reason: str
    fps: float | None


@dataclass
class Graph:
    """Sources and pipelines of one configuration generation."""

    settings: Settings
    video: dict[str, VideoSource]
    audio: dict[str, AudioSource]
    pipelines: dict[str, Pipeline | AudioPipeline]
    models: dict[str, tuple[ResolvedModel, Model]]

    @classmethod
    def build(
        cls,
        settings: Settings,
        checked: LoadedModels,
        emit: Emit,
        emit_audio: AudioEmit,
        emit_events: EmitEvents | None = None,
        *,
        emit_note: EmitNote | None = None,
    ) -> Graph:
        """Create (but do not start) every source and pipeline."""
        video: dict[str, VideoSource] = {}
        audio: dict[str, AudioSource] = {}
        pipelines: dict[str, Pipeline | AudioPipeline] = {}
        for p in settings.pipelines:
            resolved, model = checked.models[p.name]
            task = build_task(p, resolved, model)
            if p.name in checked.detectors:
                task = two_stage_pose(p, cast(PoseTask, task), checked.detectors[p.name])
            src = settings.source(p.source)
            if src.kind in AUDIO_KINDS:
                if p.source not in audio:
                    audio[p.source] = open_audio_source(src)
                queue = audio[p.source].subscribe()
                pipelines[p.name] = AudioPipeline(
                    p, cast(AudioTaskLike, task), queue, emit_audio, emit_note
                )
            else:
                if p.source not in video:
                    video[p.source] = open_video_source(src)
                # A model using every core gets its frames read on demand:
                # decoding beside it would only slow its inference down.
                slot = video[p.source].subscribe(on_demand=fills_every_core(p.threads))
                pipelines[p.name] = Pipeline(
                    p, cast(VisionTask, task), slot, emit, emit_events, emit_note=emit_note
                )
        models = dict(checked.models)
        models |= {f"{name} detector": m for name, m in checked.detectors.items()}
        return cls(settings, video, audio, pipelines, models)

    def start(self) -> None:
        """Start pipelines first, so no source produces before its readers exist."""
        for p in self.pipelines.values():
            p.start()
        for v in self.video.values():
            v.start()
        for a in self.audio.values():
            a.start()

    def stop(self, deadline: float) -> None:
        """Stop capture, then let pipelines finish their current input."""

        def left(cap: float) -> float:
            return max(0.1, min(cap, deadline - time.monotonic()))

        for v in self.video.values():
            v.stop(timeout=left(2.0))
        for a in self.audio.values():
            a.stop(timeout=left(2.0))
        for p in self.pipelines.values():
            p.stop(timeout=left(3.0))

    def close_models(self) -> None:
        for _, model in self.models.values():
            model.close()
        self.models.clear()

    def sources(self) -> dict[str, SourceView]:
        """State of every source, video and audio alike."""
        out: dict[str, SourceView] = {}
        for name, v in self.video.items():
            st = v.status
            out[name] = SourceView(name, st.kind, st.state, st.reason, st.fps)
        for name, a in self.audio.items():
            ast = a.status
            out[name] = SourceView(name, ast.kind, ast.state, ast.reason, None)
        return out


def two_stage_pose(
    p: PipelineSettings, pose: PoseTask, detector: tuple[ResolvedModel, Model]
) -> TwoStagePoseTask:
    """The multi-person pose task of a pose pipeline that names a ``detector``."""
    return TwoStagePoseTask(
        DetectionTask(*detector),
        pose,
        detect_threshold=p.detector_threshold,
        max_people=p.max_people,
    )
