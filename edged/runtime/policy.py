"""Which results a pipeline publishes: ``all``, ``changes`` or ``nonempty``.

``changes`` is the default because a camera watching an empty hallway at
5 fps would otherwise publish 430,000 identical messages a day. A heartbeat
re-publishes an unchanged result so a subscriber can tell "nothing changed"
from "the device is gone".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Literal

from edged.types import AudioClass, Detection, Pose

Mode = Literal["all", "changes", "nonempty"]


def _signature(items: Sequence[Detection | Pose | AudioClass]) -> tuple[tuple[str, int], ...]:
    labels = (getattr(i, "label", "person") for i in items)  # a Pose is always a person
    return tuple(sorted(Counter(labels).items()))


class PublishPolicy:
    """Decides per result whether to publish; one instance per pipeline thread."""

    def __init__(self, mode: Mode, heartbeat_s: float) -> None:
        self.mode: Mode = mode
        self._heartbeat_s = heartbeat_s
        self._last_sig: tuple[tuple[str, int], ...] | None = None
        self._last_pub = float("-inf")

    def should_publish(
        self,
        items: Sequence[Detection | Pose | AudioClass],
        now: float,
        *,
        changed: bool | None = None,
    ) -> bool:
        """``now`` is a monotonic time in seconds.

        ``changed`` is the tracker's verdict (a track began or ended) when the
        pipeline tracks objects; it replaces the label-count comparison, which
        a detector flickering at its threshold would trip on every frame.
        """
        if self.mode == "all":
            decision = True
        elif self.mode == "nonempty":
            decision = bool(items)
        else:
            sig = _signature(items)
            differs = sig != self._last_sig if changed is None else changed
            decision = differs or now - self._last_pub >= self._heartbeat_s
            self._last_sig = sig
        if decision:
            self._last_pub = now
        return decision
