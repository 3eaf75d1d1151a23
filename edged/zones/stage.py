"""The zones step of a detection pipeline: masks before tracking, zones and lines after it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from edged.config.settings import PipelineSettings
from edged.geometry import anchor_point, contains
from edged.tasks import VisionResult
from edged.track.tracker import Track
from edged.types import Detection
from edged.zones.lines import Crossing, LineCrossings
from edged.zones.occupancy import Occupancy, ZoneCounts


@dataclass(frozen=True, slots=True)
class ZoneUpdate:
    """What one frame changed: zone counts to publish and lines crossed."""

    changed: list[ZoneCounts]
    crossings: list[Crossing]

    def __bool__(self) -> bool:
        return bool(self.changed or self.crossings)


class ZoneStage:
    """Masks, zones and lines of one pipeline (its ``masks``, ``zones`` and ``lines`` keys)."""

    def __init__(self, settings: PipelineSettings) -> None:
        self._masks = list(settings.masks)
        self.occupancy = Occupancy(settings.zones)
        self._lines = LineCrossings(settings.lines)

    @classmethod
    def of(cls, settings: PipelineSettings) -> ZoneStage | None:
        """The stage for ``settings``, or None when it has no masks, zones or lines."""
        if settings.masks or settings.zones or settings.lines:
            return cls(settings)
        return None

    def masked(self, d: Detection) -> bool:
        """Whether ``d``'s anchor lies inside any mask."""
        return any(contains(m.polygon, anchor_point(d.box, m.anchor)) for m in self._masks)

    def mask(self, result: VisionResult) -> VisionResult:
        """``result`` without the detections inside a mask."""
        if not self._masks or result.kind != "detections":
            return result
        items = tuple(d for d in result.items if isinstance(d, Detection) and not self.masked(d))
        return VisionResult(result.kind, items, result.timing)

    def update(
        self, result: VisionResult, tracks: Sequence[Track], ts: float
    ) -> tuple[VisionResult, ZoneUpdate]:
        """Step zones and lines with this frame's live ``tracks`` (tracked at ``ts``).

        Returns ``result`` with each detection's ``zones`` set to its track's
        zones (a detection whose track is not confirmed yet is in none), and
        what changed.
        """
        changed = self.occupancy.update(tracks, ts)
        crossings = self._lines.update(tracks)
        # The tracker stores a matched detection's box as its track's box, so
        # a track updated at ts with the same box is that detection's track.
        by_box = {t.box: t.id for t in tracks if t.last_ts == ts}
        items = tuple(
            dataclasses.replace(d, zones=self.occupancy.zones_of(by_box[d.box]))
            if isinstance(d, Detection) and d.box in by_box
            else d
            for d in result.items
        )
        return VisionResult(result.kind, items, result.timing), ZoneUpdate(changed, crossings)  # type: ignore[arg-type]

    def end(self, ts: float) -> ZoneUpdate:
        """Every track is gone (the pipeline stops): every object leaves every zone."""
        return ZoneUpdate(self.occupancy.update((), ts), [])
