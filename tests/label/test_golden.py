"""Golden sets and their metrics: the file format, media resolution, and the arithmetic."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from edged.__main__ import main
from edged.catalog.catalog import data_dir, load_catalog
from edged.label.golden import (
    GoldenError,
    golden_dir,
    load_golden,
    media_dir,
    media_path,
    shipped_media_dir,
)
from edged.label.metrics import DetectionCounts, pck, top_k_hit
from edged.label.nutrition import load_label
from edged.types import Detection

REFERENCE_BOXES = Path(__file__).resolve().parents[1] / "decode" / "reference_boxes.toml"


class TestShippedSets:
    """The three shipped golden sets load, name only relative media, and the media exist."""

    @pytest.mark.parametrize(
        ("name", "task", "items"),
        [("coco-photos", "detection", 9), ("squat-pose", "pose", 4), ("sound-clips", "audio", 5)],
    )
    def test_loads(self, name: str, task: str, items: int, media_dir: Path) -> None:
        golden = load_golden(name)
        assert (golden.task, len(golden.items)) == (task, items)
        for item in golden.items:
            assert not Path(item.media).is_absolute()
            assert media_path(media_dir, item.media).is_file()

    def test_detection_boxes_are_the_hand_made_references(self) -> None:
        """coco-photos carries exactly the boxes of tests/decode/reference_boxes.toml."""
        refs = tomllib.loads(REFERENCE_BOXES.read_text())["box"]
        want = sorted((b["image"], b["label"], tuple(b["box"])) for b in refs)
        golden = load_golden("coco-photos")
        got = sorted((i.media, b.label, b.box) for i in golden.items for b in i.boxes)
        assert got == want
        negatives = {i.media for i in golden.items if not i.boxes}
        assert {"rocket.jpg", "chelsea.png"} <= negatives

    def test_shipped_sets_live_beside_the_catalog(self) -> None:
        assert {p.stem for p in golden_dir().glob("*.toml")} >= {
            "coco-photos",
            "squat-pose",
            "sound-clips",
        }


class TestFormat:
    """A broken golden set is refused with the reason."""

    def write(self, tmp_path: Path, text: str) -> Path:
        path = tmp_path / "set.toml"
        path.write_text(text)
        return path

    def test_absolute_media_is_refused(self, tmp_path: Path) -> None:
        path = self.write(
            tmp_path,
            'name="x"\ntask="audio"\n[[item]]\nmedia="/srv/a.wav"\nexpect="Speech"\n',
        )
        with pytest.raises(GoldenError, match="relative to the media dir"):
            load_golden(path)

    def test_parent_escape_is_refused(self, tmp_path: Path) -> None:
        path = self.write(
            tmp_path, 'name="x"\ntask="audio"\n[[item]]\nmedia="../a.wav"\nexpect="Speech"\n'
        )
        with pytest.raises(GoldenError, match="relative to the media dir"):
            load_golden(path)

    def test_a_box_label_must_be_evaluated(self, tmp_path: Path) -> None:
        path = self.write(
            tmp_path,
            'name="x"\ntask="detection"\nlabels=["person"]\n[[item]]\nmedia="a.jpg"\n'
            'boxes=[{label="dog", box=[0.1,0.1,0.5,0.5]}]\n',
        )
        with pytest.raises(GoldenError, match="'dog' is not in labels"):
            load_golden(path)

    def test_unknown_name_lists_the_shipped_sets(self) -> None:
        with pytest.raises(GoldenError, match="shipped: coco-photos"):
            load_golden("no-such-set")


class TestMediaDir:
    """--media, then EDGED_MEDIA_DIR, then the sample media shipped with edged."""

    def test_without_flag_or_environment_the_shipped_media_are_used(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every item of every shipped set resolves with nothing set (a fresh install)."""
        monkeypatch.delenv("EDGED_MEDIA_DIR", raising=False)
        media = media_dir()
        assert media == shipped_media_dir() == data_dir() / "media"
        for path in golden_dir().glob("*.toml"):
            for item in load_golden(path).items:
                assert media_path(media, item.media).is_file()
                if item.keypoints_csv:
                    assert media_path(media, item.keypoints_csv).is_file()

    def test_the_environment_overrides_the_shipped_media_and_the_flag_overrides_both(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("EDGED_MEDIA_DIR", str(tmp_path))
        assert media_dir() == tmp_path
        assert media_dir(shipped_media_dir()) == shipped_media_dir()
        with pytest.raises(GoldenError, match="not found"):
            media_path(tmp_path, "astronaut.png")

    def test_a_missing_dir_is_named_with_where_it_came_from(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("EDGED_MEDIA_DIR", str(tmp_path / "nope"))
        with pytest.raises(GoldenError, match=r"nope is not a directory \(EDGED_MEDIA_DIR\)"):
            media_dir()
        with pytest.raises(GoldenError, match=r"gone is not a directory \(--media\)"):
            media_dir(tmp_path / "gone")

    def test_bench_scores_the_sound_clips_from_the_shipped_media(
        self,
        monkeypatch: pytest.MonkeyPatch,
        models_dir: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """``models bench`` with EDGED_MEDIA_DIR unset: the derived mono clips keep YAMNet's score."""
        monkeypatch.delenv("EDGED_MEDIA_DIR", raising=False)
        models = tmp_path / "models"
        models.mkdir()
        for art in load_catalog().get("yamnet").artifacts():
            shutil.copy2(models_dir / art.name, models / art.name)
        rc = main(
            ["models", "bench", "yamnet", "--models-dir", str(models), "--runs", "2",
             "--warmup", "0"]
        )  # fmt: skip
        assert rc == 0, capsys.readouterr().err
        label = load_label(models, "yamnet")
        assert label is not None
        accuracy = label.accuracy
        assert accuracy is not None
        assert accuracy.golden == "sound-clips"
        # What the sources scored (stereo 44.1/48 kHz): every clip's class in the top 3,
        # and the speech, guitar and typing first (the dogs rank "Animal" first).
        assert accuracy.metrics == {"top1": 0.6, "top3": 1.0}


def det(label: str, score: float, box: tuple[float, float, float, float]) -> Detection:
    return Detection(label, 0, score, box)


class TestDetectionCounts:
    """Greedy one-to-one matching at IoU 0.5, best score first."""

    def test_one_box_matches_one_detection(self) -> None:
        counts = DetectionCounts(("person",))
        box = (0.1, 0.1, 0.5, 0.9)
        found = [det("person", 0.9, box), det("person", 0.6, (0.12, 0.1, 0.5, 0.9))]
        assert counts.add([("person", box)], found, 0.5) == {"tp": 1, "fp": 1, "fn": 0}
        m = counts.metrics()
        assert (m["precision(person)"], m["recall(person)"]) == (0.5, 1.0)

    def test_low_iou_is_a_miss_and_a_false_positive(self) -> None:
        counts = DetectionCounts(("dog",))
        assert counts.add([("dog", (0.0, 0.0, 0.2, 0.2))], [det("dog", 0.9, (0.5, 0.5, 1, 1))], 0.5)
        m = counts.metrics()
        assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, None)

    def test_labels_not_evaluated_are_ignored_and_nothing_found_is_undefined(self) -> None:
        counts = DetectionCounts(("person", "cup"))
        counts.add([("person", (0.1, 0.1, 0.4, 0.4))], [det("cat", 0.9, (0, 0, 1, 1))], 0.5)
        m = counts.metrics()
        assert m["recall(person)"] == 0.0
        assert m["precision(person)"] is None  # nothing detected: undefined, not 1.0
        assert m["recall(cup)"] is None


def test_pck_counts_keypoints_within_alpha_of_the_person_size() -> None:
    """A person 100 px tall: at alpha 0.05 a keypoint may be 5 px off."""
    ref = np.array([[0.5, 0.0], [0.5, 1.0]])  # normalized; 100 x 100 image → 100 px tall
    near = ref + np.array([[0.04, 0.0], [0.0, 0.0]])  # 4 px off
    far = ref + np.array([[0.06, 0.0], [0.0, 0.0]])  # 6 px off
    assert pck(near, ref, 100, 100, 0.05) == (2, 2)
    assert pck(far, ref, 100, 100, 0.05) == (1, 2)


def test_top_k() -> None:
    scores = np.array([0.1, 0.7, 0.5, 0.2], dtype=np.float32)
    labels = ("Speech", "Animal", "Dog", "Music")
    assert not top_k_hit(scores, labels, "Dog", 1)
    assert top_k_hit(scores, labels, "Dog", 3)
