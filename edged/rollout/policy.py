"""The decisions of a rollout, as pure functions of numbers (no model, no MQTT, no clock).

Two verdicts: whether a candidate's golden-set numbers clear the pipeline's
bar (its ``require`` list, read by the parser of ``edged models select``, and
its latency budget), and whether a switched pipeline must roll back during
probation (error ratio, latency p95 over the budget). Each returns the reasons
against, in words an operator reads on the rollout topic; no reason = pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edged.label.select import Requirement


def parse_bar(texts: Sequence[str]) -> list[Requirement]:
    """The pipeline's ``require`` strings as requirements (settings validated them)."""
    return [Requirement.parse(t) for t in texts]


def bar_failures(
    bar: Sequence[Requirement], metrics: Mapping[str, float | None], max_latency_ms: float = 0.0
) -> list[str]:
    """Why ``metrics`` miss the bar (empty when they clear it).

    A latency budget (``max_latency_ms`` > 0) is part of the bar: a model
    that is over it on the golden set would only be rolled back in probation.
    """
    reasons = [r for req in bar if (r := req.failure(metrics)) is not None]
    p95 = metrics.get("p95_ms")
    if max_latency_ms > 0 and p95 is not None and p95 > max_latency_ms:
        reasons.append(f"p95_ms={p95:.4g}, over the budget max_latency_ms={max_latency_ms:g}")
    return reasons


@dataclass(frozen=True, slots=True)
class Window:
    """What a pipeline did since its model was switched."""

    frames: int
    failures: int
    latency_p95_ms: float


def probation_failure(
    window: Window, *, max_latency_ms: float, max_error_ratio: float, min_frames: int
) -> str | None:
    """Why the new model must be rolled back, or None while it holds.

    Nothing is judged before ``min_frames`` frames (ran or failed): a p95 of
    two frames says nothing.
    """
    tried = window.frames + window.failures
    if tried < min_frames:
        return None
    ratio = window.failures / tried
    if ratio > max_error_ratio:
        return (
            f"error ratio {ratio:.2f} ({window.failures} of {tried} frames failed) is over "
            f"max_error_ratio={max_error_ratio:g}"
        )
    if window.frames >= min_frames and 0 < max_latency_ms < window.latency_p95_ms:
        return (
            f"latency p95 {window.latency_p95_ms:.1f} ms over {window.frames} frames is over "
            f"the budget max_latency_ms={max_latency_ms:g}"
        )
    return None
