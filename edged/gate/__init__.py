"""Gates decide which inputs are worth running a model on, before any preprocessing."""

from __future__ import annotations

from edged.gate.motion import MotionGate

__all__ = ["MotionGate"]
