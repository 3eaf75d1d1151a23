"""MoveNet decoder: synthetic outputs for the mapping rules, the real model for the reference.

The Coral reference keypoints for squat.png were made with a plain resize of
the 500x610 image to 192x192. With a plain resize the model-input square and
the image coincide, so the reference x/y are normalized to both; reproducing
that preprocessing here tests the decoder against the reference directly, in
frame units. (The catalog's letterbox is compared in tests/tasks.)
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from edged.decode.pose import COCO_KEYPOINTS, DECODERS, KEYPOINT_THRESHOLD, MoveNetDecoder
from edged.errors import DecodeError, ModelError
from edged.infer.base import Model, TensorSpec
from edged.infer.registry import load_model
from edged.preprocess.image import ImageSpec, Letterbox, preprocess
from tests.helpers.vision import read_rgb

MOVENET = "movenet_singlepose_lightning_int8.tflite"


def output(kps: list[tuple[float, float, float]]) -> list[npt.NDArray[np.float32]]:
    """A MoveNet output [1, 1, 17, 3] from (y, x, score) rows."""
    return [np.asarray(kps, dtype=np.float32).reshape(1, 1, 17, 3)]


def reference_xy(media_dir: Path) -> npt.NDArray[np.float64]:
    with (media_dir / "squat_movenet_reference.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["keypoint_id"]) for r in rows] == list(range(17))
    return np.array([[float(r["keypoint_x"]), float(r["keypoint_y"])] for r in rows])


@pytest.fixture(scope="module")
def movenet(model_mirror: Path) -> Model:
    return load_model(model_mirror / MOVENET)


def stretch_spec(model: Model) -> ImageSpec:
    return ImageSpec.from_tensor(model.inputs[0], color="rgb", resize="stretch")


def test_registered_and_names_the_17_coco_keypoints() -> None:
    assert isinstance(DECODERS["movenet"](), MoveNetDecoder)
    assert len(COCO_KEYPOINTS) == 17
    assert COCO_KEYPOINTS[:5] == ("nose", "left_eye", "right_eye", "left_ear", "right_ear")
    assert COCO_KEYPOINTS[5] == "left_shoulder"
    assert COCO_KEYPOINTS[-1] == "right_ankle"


def test_keypoints_are_mapped_through_the_letterbox() -> None:
    # A 400x200 frame letterboxed (centred) into 192x192: scale 0.48, content
    # 192x96 at y offset 48. Input point (x=0.25, y=0.5) is frame (0.25, 0.5);
    # input y = 48/192 is the top edge of the frame.
    lb = Letterbox(400, 200, 192, 192, 0.48, 0.48, 0.0, 48.0)
    kps = [(0.5, 0.25, 0.9)] * 16 + [(48 / 192, 0.75, 0.8)]
    (pose,) = MoveNetDecoder().decode(output(kps), lb, threshold=0.5)
    assert pose.keypoints[0].name == "nose"
    assert (pose.keypoints[0].x, pose.keypoints[0].y) == pytest.approx((0.25, 0.5))
    assert (pose.keypoints[16].x, pose.keypoints[16].y) == pytest.approx((0.75, 0.0))
    assert pose.keypoints[16].score == pytest.approx(0.8)
    assert pose.score == pytest.approx((16 * 0.9 + 0.8) / 17)
    assert pose.box == pytest.approx((0.25, 0.0, 0.75, 0.5))


def test_points_in_the_padding_are_clipped_to_the_frame() -> None:
    lb = Letterbox(400, 200, 192, 192, 0.48, 0.48, 0.0, 48.0)
    kps = [(0.02, 0.5, 0.9)] * 17  # in the top padding band
    (pose,) = MoveNetDecoder().decode(output(kps), lb, threshold=0.0)
    assert all(k.y == 0.0 for k in pose.keypoints)


def test_box_covers_only_keypoints_above_the_keypoint_threshold() -> None:
    lb = Letterbox(192, 192, 192, 192, 1.0, 1.0, 0.0, 0.0)
    kps = [(0.3, 0.4, 0.9), (0.6, 0.5, 0.9)] + [(0.95, 0.05, KEYPOINT_THRESHOLD - 0.05)] * 15
    (pose,) = MoveNetDecoder().decode(output(kps), lb, threshold=0.1)
    assert pose.box == pytest.approx((0.4, 0.3, 0.5, 0.6))
    assert len(pose.keypoints) == 17  # unsure keypoints are still reported


def test_no_pose_below_the_threshold() -> None:
    lb = Letterbox(192, 192, 192, 192, 1.0, 1.0, 0.0, 0.0)
    kps = [(0.5, 0.5, 0.25)] * 17  # exact in float32, so the mean is exactly 0.25
    assert MoveNetDecoder().decode(output(kps), lb, threshold=0.3) == []
    assert len(MoveNetDecoder().decode(output(kps), lb, threshold=0.25)) == 1


def test_check_refuses_other_outputs_naming_their_shapes() -> None:
    f32 = np.dtype(np.float32)
    multipose = [TensorSpec("out", (1, 6, 56), f32)]
    with pytest.raises(ModelError, match=r"outputs \[\[1, 6, 56\]\]"):
        MoveNetDecoder().check(multipose)
    ssd = [TensorSpec(f"o{i}", s, f32) for i, s in enumerate([(1, 10, 4), (1, 10), (1, 10), (1,)])]
    with pytest.raises(ModelError, match=r"\[\[1, 10, 4\], \[1, 10\], \[1, 10\], \[1\]\]"):
        MoveNetDecoder().check(ssd)
    MoveNetDecoder().check([TensorSpec("out", (1, 1, 17, 3), f32)])


def test_decode_refuses_a_wrong_array() -> None:
    lb = Letterbox(192, 192, 192, 192, 1.0, 1.0, 0.0, 0.0)
    with pytest.raises(DecodeError, match=r"\[1, 1, 16, 3\]"):
        MoveNetDecoder().decode([np.zeros((1, 1, 16, 3), np.float32)], lb, 0.1)


def test_real_model_matches_the_coral_reference_with_its_preprocessing(
    movenet: Model, media_dir: Path
) -> None:
    decoder = MoveNetDecoder()
    decoder.check(movenet.outputs)
    tensor, lb = preprocess(read_rgb(media_dir / "squat.png"), stretch_spec(movenet))
    (pose,) = decoder.decode(movenet.run([tensor]), lb, threshold=0.3)
    ours = np.array([[k.x, k.y] for k in pose.keypoints])
    err = np.abs(ours - reference_xy(media_dir)).max(axis=1)
    worst = int(err.argmax())
    print(f"squat, plain resize: max error {err.max():.4f} ({COCO_KEYPOINTS[worst]})")
    assert err.max() <= 0.03
    assert sum(k.score > 0.3 for k in pose.keypoints) >= 14
    x0, y0, x1, y1 = pose.box
    assert 0.0 <= x0 < x1 <= 1.0
    assert 0.0 <= y0 < y1 <= 1.0


@pytest.mark.parametrize("image", ["chelsea.png", "coffee.png"])
def test_real_model_finds_no_pose_on_non_person_images(
    movenet: Model, media_dir: Path, image: str
) -> None:
    tensor, lb = preprocess(read_rgb(media_dir / image), stretch_spec(movenet))
    outputs = movenet.run([tensor])
    assert MoveNetDecoder().decode(outputs, lb, threshold=0.3) == []
    assert float(outputs[0][..., 2].mean()) <= 0.11  # as MODELS.md measured
