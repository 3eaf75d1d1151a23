"""The offload building blocks on their own: policy, budget, preparation, protocol, settings."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.config.settings import load_settings
from edged.errors import ConfigError
from edged.offload.budget import DailyBytes, TokenBucket
from edged.offload.gate import REASONS, Counters, uncertain_boxes
from edged.offload.link import Link
from edged.offload.protocol import crop_to_frame
from edged.preprocess.jpeg import WHOLE, crop_region, prepare
from edged.types import Detection, Pose
from tests.helpers.vision import read_rgb

BAND = (0.35, 0.6)


def det(score: float, box: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)) -> Detection:
    return Detection("person", 0, score, box)


class Clock:
    """A settable clock for the budget's time arithmetic."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TestUncertainty:
    """The band applies to the best score of the labels of interest."""

    def test_best_score_in_band_is_uncertain_and_gives_the_band_boxes(self) -> None:
        boxes = uncertain_boxes(
            [det(0.5, (0.1, 0.1, 0.2, 0.2)), det(0.2, (0.5, 0.5, 0.6, 0.6))], BAND
        )
        assert boxes == [(0.1, 0.1, 0.2, 0.2)]

    @pytest.mark.parametrize("scores", [[], [0.6], [0.9, 0.4], [0.34]])
    def test_above_below_or_nothing_is_not_uncertain(self, scores: list[float]) -> None:
        assert uncertain_boxes([det(s) for s in scores], BAND) is None

    def test_band_edges_are_low_inclusive_high_exclusive(self) -> None:
        assert uncertain_boxes([det(0.35)], BAND) is not None
        assert uncertain_boxes([det(0.6)], BAND) is None

    def test_poses_are_never_uncertain(self) -> None:
        assert uncertain_boxes([Pose(0.5, (0, 0, 1, 1), ())], BAND) is None


class TestCounters:
    def test_counts_every_reason_per_pipeline_and_in_total(self) -> None:
        c = Counters()
        for reason in REASONS:
            c.add("door", reason)
        c.add("yard", "sent")
        assert c.snapshot()["door"] == dict.fromkeys(REASONS, 1)
        assert c.totals()["sent"] == 2


class TestTokenBucket:
    """Frames per minute: one minute's worth at once, then the rate."""

    def test_a_burst_gets_one_minute_of_budget_then_the_rate(self) -> None:
        clock = Clock(100.0)
        bucket = TokenBucket(6, clock)
        assert sum(bucket.take() for _ in range(50)) == 6
        clock.now += 9.9
        assert not bucket.take()
        clock.now += 0.2
        assert bucket.take()
        clock.now += 3600
        assert sum(bucket.take() for _ in range(50)) == 6

    def test_zero_sends_nothing(self) -> None:
        assert not TokenBucket(0, Clock(0.0)).take()


class TestDailyBytes:
    """Megabytes per day survive restarts and reset at UTC midnight."""

    def test_spent_bytes_survive_a_restart(self, tmp_path: Path) -> None:
        path = tmp_path / "budget.json"
        clock = Clock(1_800_000_000.0)
        daily = DailyBytes(path, 0.1, clock)
        daily.spend(60_000)
        again = DailyBytes(path, 0.1, clock)
        assert again.sent_today == 60_000
        assert again.allows(40_000)
        assert not again.allows(40_001)

    def test_a_new_utc_day_starts_from_zero(self, tmp_path: Path) -> None:
        path = tmp_path / "budget.json"
        clock = Clock(1_800_000_000.0)
        DailyBytes(path, 0.1, clock).spend(100_000)
        clock.now += 86_400
        assert DailyBytes(path, 0.1, clock).sent_today == 0

    def test_a_damaged_record_grants_nothing(self, tmp_path: Path) -> None:
        path = tmp_path / "budget.json"
        path.write_text("{not json")
        assert not DailyBytes(path, 0.1, Clock(1_800_000_000.0)).allows(1)

    def test_the_record_is_plain_json(self, tmp_path: Path) -> None:
        path = tmp_path / "budget.json"
        DailyBytes(path, 1, Clock(1_800_000_000.0)).spend(5)
        assert json.loads(path.read_text()) == {"day": "2027-01-15", "bytes": 5}


class TestPreparation:
    """Crop with margin, snap to pixels, fit max_side, JPEG."""

    def test_union_with_margin_is_clipped_to_the_frame(self) -> None:
        region = crop_region([(0.1, 0.2, 0.3, 0.4), (0.5, 0.1, 0.7, 0.3)], 0.5)
        assert region == pytest.approx((0.0, 0.0, 1.0, 0.55))
        assert crop_region([], 0.5) == WHOLE

    def test_whole_frame_is_downscaled_to_max_side(self, media_dir: Path) -> None:
        rgb = read_rgb(media_dir / "cat_720p.jpg")
        p = prepare(rgb, WHOLE, max_side=320, quality=80)
        assert (p.width, p.height) == (320, 180)
        assert p.crop == WHOLE
        decoded = cv2.imdecode(np.frombuffer(p.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape == (180, 320, 3)

    def test_crop_is_snapped_to_pixels_and_never_tiny(self, media_dir: Path) -> None:
        rgb = read_rgb(media_dir / "cat_720p.jpg")  # 1280 x 720
        p = prepare(rgb, (0.5001, 0.5001, 0.5002, 0.5002), max_side=640, quality=80)
        assert (p.width, p.height) == (32, 32)
        x0, y0, x1, y1 = p.crop
        assert (x0 * 1280, x1 * 1280) == pytest.approx((624, 656))
        assert (y0 * 720, y1 * 720) == pytest.approx((344, 376))

    def test_quality_trades_bytes(self, media_dir: Path) -> None:
        rgb = read_rgb(media_dir / "cat_720p.jpg")
        low = prepare(rgb, WHOLE, max_side=640, quality=30)
        high = prepare(rgb, WHOLE, max_side=640, quality=95)
        assert len(low.jpeg) < len(high.jpeg) / 2

    def test_crop_boxes_map_back_onto_the_frame(self) -> None:
        assert crop_to_frame((0.0, 0.0, 1.0, 1.0), (0.2, 0.4, 0.6, 0.8)) == (0.2, 0.4, 0.6, 0.8)
        assert crop_to_frame((0.5, 0.5, 1.0, 1.0), (0.2, 0.4, 0.6, 0.8)) == pytest.approx(
            (0.4, 0.6, 0.6, 0.8)
        )


class TestLinkGate:
    """What each link state means for a frame."""

    @pytest.mark.parametrize(
        ("link", "reason"),
        [
            (Link("up", 10.0, None, metered=False), None),
            (Link("up", 10.0, None, metered=True), "metered"),
            (Link("degraded", 900.0, "slow", metered=False), "rtt_high"),
            (Link("down", None, "connect: refused", metered=True), "link_down"),
        ],
    )
    def test_refusal(self, link: Link, reason: str | None) -> None:
        assert link.refusal() == reason

    def test_metered_is_said_in_state(self) -> None:
        assert "metered" in (Link("up", 1.0, None, metered=True).state().reason or "")


class TestSettings:
    """Offload configuration is refused where it could not work as written."""

    def _load(self, tmp_path: Path, text: str) -> None:
        path = tmp_path / "edged.toml"
        path.write_text(text)
        load_settings(path)

    def test_plain_http_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="https"):
            self._load(tmp_path, '[offload]\nurl = "http://cloud.example"\n')

    def test_audio_offload_is_refused_with_the_key(self, tmp_path: Path) -> None:
        text = """
[[sources]]
name = "mic0"
kind = "wav"
uri = "x.wav"
[[pipelines]]
name = "yard"
source = "mic0"
task = "audio"
model = "yamnet"
[pipelines.offload]
enabled = true
"""
        with pytest.raises(ConfigError) as info:
            self._load(tmp_path, text)
        ((key, message),) = info.value.problems
        assert key == "pipelines[0]"
        assert "offload.enabled" in message
        assert "detection pipelines only" in message
