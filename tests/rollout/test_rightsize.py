"""Right-sizing decisions (pure): sustained limits step down, lasting headroom steps up."""

from __future__ import annotations

from edged.rollout.policy import parse_bar
from edged.rollout.rightsize import Limits, RightSizer, Sample, Step, next_smaller, over

LIMITS = Limits(max_latency_ms=100, max_temp_c=80, max_drop_ratio=0.5, window_s=10)


def sample(now: float, p95: float = 50, temp: float | None = 60, drops: float = 0.0) -> Sample:
    return Sample(now=now, frames=100, latency_p95_ms=p95, temp_c=temp, drop_ratio=drops)


def test_a_limit_broken_for_less_than_the_window_does_nothing() -> None:
    """Over budget for 9 of 10 s, then back under: no step."""
    sizer = RightSizer(LIMITS, min_frames=5)
    assert [sizer.observe(sample(t, p95=150), can_step_up=False) for t in range(10)] == [None] * 10
    assert sizer.observe(sample(10), can_step_up=False) is None
    assert sizer.observe(sample(21, p95=150), can_step_up=False) is None


def test_a_limit_broken_for_the_whole_window_steps_down_naming_it() -> None:
    """p95 over budget from t=0 to t=10: a step down at t=10 whose reason names the limit."""
    sizer = RightSizer(LIMITS, min_frames=5)
    steps = [sizer.observe(sample(t, p95=150), can_step_up=False) for t in range(11)]
    assert steps[:10] == [None] * 10
    step = steps[10]
    assert step is not None
    assert step.direction == "down"
    assert step.reason.startswith("latency p95 150.0 ms over max_latency_ms=100 for 10.0 s")


def test_temperature_and_dropped_frames_are_limits_too() -> None:
    """Each limit alone is a reason; temperature is judged even before min_frames."""
    assert over(LIMITS, sample(0, temp=85), min_frames=5) == (
        "SoC temperature 85.0 °C over max_temp_c=80"
    )
    assert over(LIMITS, sample(0, drops=0.6), min_frames=5) == (
        "dropped-frame ratio 0.60 over max_drop_ratio=0.5"
    )
    few = Sample(now=0, frames=2, latency_p95_ms=999, temp_c=90, drop_ratio=0)
    assert over(LIMITS, few, min_frames=5) is not None
    assert over(Limits(max_latency_ms=100), few, min_frames=5) is None


def test_step_up_needs_headroom_below_the_hysteresis_edge_for_a_window() -> None:
    """p95 at 80 % of the budget is no headroom (edge 70 %); at 50 % for 10 s it is."""
    sizer = RightSizer(LIMITS, min_frames=5)
    assert all(sizer.observe(sample(t, p95=80), can_step_up=True) is None for t in range(30))
    steps = [sizer.observe(sample(30 + t, p95=50), can_step_up=True) for t in range(11)]
    assert steps[:10] == [None] * 10
    assert steps[10] is not None
    assert steps[10].direction == "up"


def test_no_step_up_without_a_bigger_model_to_go_back_to() -> None:
    """can_step_up=False: headroom alone never steps up."""
    sizer = RightSizer(LIMITS, min_frames=5)
    assert all(sizer.observe(sample(t), can_step_up=False) is None for t in range(40))


def test_a_step_up_undone_soon_doubles_the_wait_for_the_next() -> None:
    """Up at t=10, forced down at t=15: the next step up needs 20 s of headroom, not 10."""
    sizer = RightSizer(LIMITS, min_frames=5)
    sizer.switched(Step("up", "room"), now=10)
    sizer.switched(Step("down", "over"), now=15)
    steps = [sizer.observe(sample(20 + t), can_step_up=True) for t in range(21)]
    assert steps[:20] == [None] * 20
    assert steps[20] is not None


def test_no_smaller_model_found_doubles_the_wait_before_trying_again() -> None:
    """failed(): the next step down needs two windows over the limit."""
    sizer = RightSizer(LIMITS, min_frames=5)
    sizer.failed()
    steps = [sizer.observe(sample(t, p95=150), can_step_up=False) for t in range(21)]
    assert steps[:20] == [None] * 20
    assert steps[20] is not None


def test_next_smaller_is_the_most_capable_cheaper_model_that_clears_the_bar() -> None:
    """Cost = size x p50; the cheapest is skipped for the next one down; the bar filters."""
    current = {"size_mb": 10.0, "p50_ms": 50.0, "recall(person)": 0.95}  # cost 500
    candidates = {
        "tiny": {"size_mb": 1.0, "p50_ms": 5.0, "p95_ms": 8.0, "recall(person)": 0.9},  # 5
        "mid": {"size_mb": 4.0, "p50_ms": 20.0, "p95_ms": 25.0, "recall(person)": 0.92},  # 80
        "blind": {"size_mb": 4.0, "p50_ms": 30.0, "recall(person)": 0.5},  # misses the bar
        "big": {"size_mb": 20.0, "p50_ms": 50.0, "recall(person)": 0.99},  # not smaller
    }
    bar = parse_bar(["recall(person)>=0.9"])
    assert next_smaller(current, candidates, bar) == "mid"
    # A candidate over the latency budget on the golden set is no way out either.
    assert next_smaller(current, candidates, bar, max_latency_ms=10) == "tiny"
    assert next_smaller(current, {"blind": candidates["blind"]}, bar) is None
