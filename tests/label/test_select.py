"""``edged models select``: cheapest first, stop at the first pass, explain every failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.__main__ import main
from edged.errors import EX_FAILURE, EX_USAGE
from edged.label.nutrition import Accuracy, Latency, NutritionLabel
from edged.label.select import Requirement, SelectError, check_metrics, select, write_config

DETECTORS = ("ssd-mobilenet-v1-coco-int8", "yolox-nano-coco", "yolox-nano-coco-int8")


def label(name: str, size_mb: float, p50: float, recall: float) -> NutritionLabel:
    """A label with given numbers: the walk's logic does not depend on how they were measured."""
    return NutritionLabel(
        model=name,
        task="detection",
        measured=True,
        file=f"{name}.onnx",
        sha256="0" * 64,
        size_bytes=int(size_mb * 1e6),
        quantization="int8",
        quantization_detail="int8",
        runtime="onnxruntime 1.31.1",
        latency_ms=Latency(p50=p50, p95=p50 * 1.5, p99=p50 * 2, mean=p50, infer_p50=p50),
        accuracy=Accuracy(golden="coco-photos", items=9, metrics={"recall(person)": recall}),
        timestamp="2026-11-22T00:00:00Z",
    )


LABELS = {
    "small-fast": label("small-fast", 1.0, 10.0, 0.6),  # cost 10
    "mid": label("mid", 2.0, 10.0, 0.9),  # cost 20
    "big": label("big", 4.0, 20.0, 1.0),  # cost 80
}


class TestRequirement:
    """Requirements read as METRIC OP NUMBER."""

    @pytest.mark.parametrize(
        ("text", "want"),
        [
            ("recall(person)>=0.9", ("recall(person)", ">=", 0.9)),
            (" p95_ms <= 50 ", ("p95_ms", "<=", 50.0)),
            ("energy_mj<1.5e1", ("energy_mj", "<", 15.0)),
        ],
    )
    def test_parse(self, text: str, want: tuple[str, str, float]) -> None:
        r = Requirement.parse(text)
        assert (r.metric, r.op, r.value) == want

    @pytest.mark.parametrize("text", ["recall>>0.9", "fast", "p95_ms<=fast", "recall(person>=1"])
    def test_malformed(self, text: str) -> None:
        with pytest.raises(SelectError, match="METRIC OP NUMBER"):
            Requirement.parse(text)


class TestWalk:
    """The walk over labels with known numbers."""

    def test_cheapest_passing_is_chosen_and_the_rest_not_tried(self) -> None:
        s = select([Requirement.parse("recall(person)>=0.8")], LABELS)
        assert [t.model for t in s.trials] == ["small-fast", "mid", "big"]
        assert [t.verdict for t in s.trials] == ["failed", "chosen", "not tried"]
        assert s.trials[0].reasons == ["recall(person)=0.6, needs >=0.8"]
        assert s.chosen == "mid"

    def test_a_higher_bar_picks_a_more_expensive_model(self) -> None:
        assert select([Requirement.parse("recall(person)>=0.95")], LABELS).chosen == "big"

    def test_an_impossible_bar_explains_itself(self) -> None:
        reqs = [Requirement.parse("recall(person)>=0.95"), Requirement.parse("p95_ms<=20")]
        s = select(reqs, LABELS)
        assert s.chosen is None
        assert all(t.verdict == "failed" for t in s.trials)
        assert "met by 1 of 3, but not together" in s.explanation
        s = select([Requirement.parse("recall(person)>=1.01")], LABELS)
        assert "no candidate reaches it (best 1, big)" in s.explanation

    def test_unmeasured_models_are_listed_last(self) -> None:
        s = select([Requirement.parse("recall(person)>=0")], {**LABELS, "new": None})
        assert (s.trials[-1].model, s.trials[-1].verdict) == ("new", "not measured")

    def test_an_unknown_metric_is_refused_with_the_known_ones(self) -> None:
        with pytest.raises(SelectError, match=r"'recall\(persn\)'.*recall\(person\)"):
            check_metrics([Requirement.parse("recall(persn)>=0.9")], LABELS)


def test_write_config_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "edged.toml"
    text = (
        '# my device\ndevice_id = "kitchen"  # keep me\n\n[[pipelines]]\nname = "door"\n'
        'source = "cam0"\ntask = "detection"\nmodel = "yolox-nano-coco"\nthreshold = 0.5\n'
    )
    cfg.write_text(text)
    write_config(cfg, "door", "yolox-nano-coco-int8", "detection")
    assert cfg.read_text() == text.replace('"yolox-nano-coco"', '"yolox-nano-coco-int8"')
    with pytest.raises(SelectError, match=r"no pipeline 'gate'.*door"):
        write_config(cfg, "gate", "x")
    with pytest.raises(SelectError, match="is a detection pipeline, not pose"):
        write_config(cfg, "door", "x", "pose")


class TestOnTheShippedGoldenSet:
    """The real detectors, benched on coco-photos, through the real CLI."""

    def run(self, label_models: Path, media_dir: Path, *args: str) -> int:
        return main(
            [
                "models", "select", "--task", "detection", "--no-bench",
                "--models-dir", str(label_models), "--media", str(media_dir), *args,
            ]
        )  # fmt: skip

    def test_picks_the_cheapest_passing_detector_then_a_larger_one_for_a_higher_bar(
        self,
        benched_pairs: dict[str, NutritionLabel],
        label_models: Path,
        media_dir: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        detectors = {k: lab for k, lab in benched_pairs.items() if lab.model in DETECTORS}
        base = [Requirement.parse("recall(person)>=0.9")]
        first = select(base, detectors)
        assert first.chosen is not None
        order = [t.model for t in first.trials]
        assert first.trials[0].verdict == "chosen" or all(
            t.verdict == "failed" for t in first.trials[: order.index(first.chosen)]
        )
        assert self.run(label_models, media_dir, "--require", "recall(person)>=0.9") == 0
        assert f"selected: {first.chosen}" in capsys.readouterr().out

        # Raise the bar on a number where a more expensive detector beats the chosen one.
        chosen = detectors[first.chosen].metrics()
        raised = None
        for later in order[order.index(first.chosen) + 1 :]:
            theirs = detectors[later].metrics()
            # With (model, accelerator) pairs a costlier pair can lose on latency and
            # accuracy alike (the same file on slower kernels), so memory counts too.
            lower = ("p95_ms", "p50_ms", "peak_mb")
            for metric in ("precision(person)", "precision", "recall", *lower):
                mine, other = chosen.get(metric), theirs.get(metric)
                if mine is None or other is None or mine == other:
                    continue
                better = other > mine if metric not in lower else other < mine
                if better:
                    op = ">=" if metric not in lower else "<="
                    raised = Requirement.parse(f"{metric}{op}{(mine + other) / 2}")
                    break
            if raised:
                break
        assert raised is not None, (
            f"every costlier detector is worse on every number: {[(t.model, t.cost) for t in first.trials]}"
        )
        second = select([*base, raised], detectors)
        assert second.chosen is not None
        assert order.index(second.chosen) > order.index(first.chosen)
        cost = {t.model: t.cost for t in second.trials}
        assert cost[second.chosen] > cost[first.chosen]  # type: ignore[operator]
        assert (
            self.run(label_models, media_dir, "--require", str(base[0]), "--require", str(raised))
            == 0
        )
        assert f"selected: {second.chosen}" in capsys.readouterr().out

    def test_an_impossible_bar_exits_non_zero_with_the_reason(
        self,
        benched: dict[str, NutritionLabel],
        label_models: Path,
        media_dir: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        rc = self.run(
            label_models, media_dir, "--require", "recall(person)>=0.9", "--require", "p95_ms<=0.01"
        )
        assert rc == EX_FAILURE
        out = capsys.readouterr()
        # every (detector, accelerator) pair tried and failed: 3 on the CPU, SSD on XNNPACK
        assert out.out.count("failed") == 4
        assert "no model meets recall(person)>=0.9, p95_ms<=0.01" in out.err
        assert "p95_ms<=0.01: no candidate reaches it (best" in out.err

    def test_a_typo_in_a_metric_is_a_usage_error(
        self,
        benched: dict[str, NutritionLabel],
        label_models: Path,
        media_dir: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        assert self.run(label_models, media_dir, "--require", "recal(person)>=0.9") == EX_USAGE
        assert "no candidate has a metric 'recal(person)'" in capsys.readouterr().err

    def test_writes_the_choice_into_the_config(
        self,
        benched_pairs: dict[str, NutritionLabel],
        label_models: Path,
        media_dir: Path,
        tmp_path: Path,
    ) -> None:
        cfg = tmp_path / "edged.toml"
        cfg.write_text(
            '# comment\n[[pipelines]]\nname = "door"\nsource = "cam0"\ntask = "detection"\n'
            'model = "none-yet"\n'
        )
        rc = self.run(
            label_models, media_dir, "--require", "recall(person)>=0.9",
            "--write-config", str(cfg), "--pipeline", "door",
        )  # fmt: skip
        assert rc == 0
        pairs = {k: lab for k, lab in benched_pairs.items() if lab.model in DETECTORS}
        chosen = select([Requirement.parse("recall(person)>=0.9")], pairs).chosen
        assert chosen is not None
        assert f'model = "{pairs[chosen].model}"' in cfg.read_text()
        assert f'accelerator = "{pairs[chosen].accelerator}"' in cfg.read_text()
        assert cfg.read_text().startswith("# comment\n")


def test_a_requirement_prints_as_it_parses() -> None:
    """str() round-trips: a computed bar keeps every digit, a typed one stays as typed."""
    bar = Requirement.parse(f"p95_ms<={23.4861 / 3 * 3 + 1e-9}")
    assert Requirement.parse(str(bar)) == bar
    assert str(Requirement.parse("recall(person)>=0.9")) == "recall(person)>=0.9"
