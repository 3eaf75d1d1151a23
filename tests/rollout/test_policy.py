"""The rollout's decisions as pure functions: the bar, and probation's verdict."""

from __future__ import annotations

import pytest

from edged.rollout.policy import Window, bar_failures, parse_bar, probation_failure

METRICS = {"recall(person)": 0.857, "p95_ms": 80.0, "size_mb": 3.7}


def test_a_model_that_meets_every_requirement_clears_the_bar() -> None:
    """No reason against: recall and p95 both within the bar."""
    bar = parse_bar(["recall(person)>=0.8", "p95_ms<=120"])
    assert bar_failures(bar, METRICS) == []


def test_each_missed_requirement_is_named_with_the_measured_value() -> None:
    """A miss says the metric, what was measured and what is needed."""
    bar = parse_bar(["recall(person)>=0.9", "p95_ms<=50"])
    assert bar_failures(bar, METRICS) == [
        "recall(person)=0.857, needs >=0.9",
        "p95_ms=80, needs <=50",
    ]


def test_a_metric_the_golden_set_does_not_measure_fails_the_bar() -> None:
    """A bar on pck for a detector is not met silently: 'not measured'."""
    assert bar_failures(parse_bar(["pck>=0.5"]), METRICS) == ["pck not measured, needs >=0.5"]


def test_the_latency_budget_is_part_of_the_bar() -> None:
    """p95 over max_latency_ms refuses the candidate before it is switched in."""
    assert bar_failures([], METRICS, max_latency_ms=50) == [
        "p95_ms=80, over the budget max_latency_ms=50"
    ]
    assert bar_failures([], METRICS, max_latency_ms=0) == []


@pytest.mark.parametrize(
    ("window", "verdict"),
    [
        (Window(frames=2, failures=2, latency_p95_ms=900), None),  # too few to judge
        (Window(frames=10, failures=0, latency_p95_ms=90), None),
        (Window(frames=10, failures=0, latency_p95_ms=150), "latency p95 150.0 ms"),
        (Window(frames=8, failures=2, latency_p95_ms=50), "error ratio 0.20"),
    ],
)
def test_probation_rolls_back_on_errors_or_latency_only_after_min_frames(
    window: Window, verdict: str | None
) -> None:
    """Budget 100 ms, at most 10 % errors, judged from 5 frames on."""
    got = probation_failure(window, max_latency_ms=100, max_error_ratio=0.1, min_frames=5)
    if verdict is None:
        assert got is None
    else:
        assert got is not None
        assert got.startswith(verdict), got


def test_no_budget_means_latency_never_rolls_back() -> None:
    """max_latency_ms = 0: only errors count."""
    window = Window(frames=50, failures=0, latency_p95_ms=10_000)
    assert probation_failure(window, max_latency_ms=0, max_error_ratio=0.1, min_frames=5) is None
