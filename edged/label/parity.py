"""Accuracy parity: does a model lose accuracy on an accelerator, against its CPU label?

Quantized or compiled engines (TensorRT, OpenVINO, an Edge TPU, even
XNNPACK's int8 kernels) compute differently from the CPU kernels, and a model
can lose accuracy without any error. Every golden-set metric of a label
measured on an accelerator is compared with the CPU reference label of the
*same file* on the *same golden set*: a metric that drops by more than the
tolerance (absolute; every accuracy metric is a ratio in [0, 1] where higher
is better) fails parity, and ``edged models select`` never chooses a pair
that failed.
"""

from __future__ import annotations

from edged.errors import EdgedError
from edged.label.nutrition import NutritionLabel, Parity

#: Default largest drop allowed per metric: 2 points (0.02 absolute).
DEFAULT_TOLERANCE = 0.02


class ParityError(EdgedError):
    """The two labels cannot be compared (another file, another golden set, no accuracy)."""


def check_parity(
    label: NutritionLabel, reference: NutritionLabel, tolerance: float = DEFAULT_TOLERANCE
) -> Parity:
    """Compare ``label``'s accuracy with ``reference``'s (the CPU label of the same file)."""
    if label.sha256 != reference.sha256:
        raise ParityError(
            f"{label.model}: the reference label is for another file "
            f"({reference.sha256[:12]} vs {label.sha256[:12]})"
        )
    if label.accuracy is None or reference.accuracy is None:
        raise ParityError(f"{label.model}: both labels need golden-set metrics for parity")
    if label.accuracy.golden != reference.accuracy.golden:
        raise ParityError(
            f"{label.model}: golden sets differ ({label.accuracy.golden} on "
            f"{label.accelerator} vs {reference.accuracy.golden} on {reference.accelerator})"
        )
    drops: dict[str, float] = {}
    failed: list[str] = []
    for metric, ref in reference.accuracy.metrics.items():
        got = label.accuracy.metrics.get(metric)
        if ref is None or got is None:
            if (ref is None) != (got is None):
                failed.append(metric)  # defined on one side only: the outputs changed shape
            continue
        drop = round(ref - got, 6)
        drops[metric] = drop
        if drop > tolerance:
            failed.append(metric)
    return Parity(
        reference=reference.accelerator,
        tolerance=tolerance,
        passed=not failed,
        drops=drops,
        failed=failed,
    )


def parity_text(parity: Parity | None) -> str:
    """``pass``, ``FAIL: recall(person) -0.05``, or ``reference`` for a CPU label."""
    if parity is None:
        return "reference"
    if parity.passed:
        worst = max(parity.drops.values(), default=0.0)
        return f"pass (worst drop {worst:+.3f} ≤ {parity.tolerance:g})"
    shown = ", ".join(f"{m} -{parity.drops.get(m, float('nan')):.3f}" for m in parity.failed)
    return f"FAIL vs {parity.reference}: {shown} (tolerance {parity.tolerance:g})"
