"""Detection decoders on real models and photos, checked against hand-made boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from edged.catalog.catalog import load_catalog
from edged.catalog.resolve import read_labels
from edged.decode.detection import DECODERS, SsdPostprocessDecoder, YoloV8Decoder, YoloxDecoder
from edged.errors import ModelError
from edged.infer.base import Model, TensorSpec
from edged.infer.registry import load_model
from edged.preprocess.image import ImageSpec, Letterbox, preprocess
from edged.types import Detection, iou
from tests.helpers.onnx_models import build_yolov8_model
from tests.helpers.vision import read_rgb, reference_boxes

CATALOG = load_catalog()


class Detector:
    """A catalog model with its decoder, as a pipeline builds it."""

    def __init__(self, name: str, mirror: Path) -> None:
        entry = CATALOG.get(name)
        assert entry.labels is not None
        lpath = (
            CATALOG.root / entry.labels.bundled
            if entry.labels.bundled
            else mirror / entry.labels.name
        )
        self.model: Model = load_model(mirror / entry.file.name, threads=2)
        self.decoder = DECODERS[entry.decoder](labels=read_labels(lpath, entry.labels))
        self.decoder.check(self.model.outputs)
        h = entry.input
        self.spec = ImageSpec.from_tensor(
            self.model.inputs[0],
            color=h.color,
            resize=h.resize,
            anchor=h.anchor,
            pad_value=h.pad_value,
            mean=h.mean,
            std=h.std,
        )

    def __call__(self, image: Path, threshold: float) -> list[Detection]:
        tensor, lb = preprocess(read_rgb(image), self.spec)
        return self.decoder.decode(self.model.run([tensor]), lb, threshold)


@pytest.fixture(scope="module")
def yolox(model_mirror: Path) -> Detector:
    return Detector("yolox-nano-coco", model_mirror)


@pytest.fixture(scope="module")
def ssd(model_mirror: Path) -> Detector:
    return Detector("ssd-mobilenet-v1-coco-int8", model_mirror)


def best_match(found: list[Detection], label: str, ref: tuple[float, float, float, float]) -> float:
    return max((iou(d.box, ref) for d in found if d.label == label), default=0.0)


@pytest.mark.parametrize(
    ("image", "label", "count"),
    [
        ("astronaut.png", "person", 1),
        ("grace_hopper.jpg", "person", 1),
        ("squat.png", "person", 1),
        ("people_group.jpg", "person", 4),
        ("coffee.png", "cup", 1),
        ("pets.jpg", "dog", 2),
    ],
)
def test_yolox_finds_reference_objects(
    yolox: Detector, media_dir: Path, image: str, label: str, count: int
) -> None:
    """YOLOX finds each hand-labelled object with IoU >= 0.7, and the right count."""
    found = yolox(media_dir / image, 0.3)
    assert sum(d.label == label for d in found) == count, found
    for ref_label, ref in reference_boxes(image):
        assert best_match(found, ref_label, ref) >= 0.7, (image, ref, found)


def test_yolox_finds_nothing_on_rocket(yolox: Detector, media_dir: Path) -> None:
    """The rocket photo (nothing COCO-like) gives no detection above 0.3."""
    assert yolox(media_dir / "rocket.jpg", 0.3) == []


@pytest.mark.parametrize(
    ("image", "label", "count"),
    [
        ("grace_hopper.jpg", "person", 1),
        ("squat.png", "person", 1),
        ("coffee.png", "cup", 1),
        ("pets.jpg", "dog", 2),
        ("chelsea.png", "cat", 1),
    ],
)
def test_ssd_finds_reference_objects(
    ssd: Detector, media_dir: Path, image: str, label: str, count: int
) -> None:
    """SSD (uint8, TFLite post-processing) finds what MODELS.md lists; boxes within IoU 0.5."""
    found = ssd(media_dir / image, 0.5)
    assert sum(d.label == label for d in found) == count, found
    for ref_label, ref in reference_boxes(image):
        assert best_match(found, ref_label, ref) >= 0.5, (image, ref, found)


def test_ssd_finds_nothing_on_rocket(ssd: Detector, media_dir: Path) -> None:
    """No SSD detection above 0.5 on the rocket photo."""
    assert ssd(media_dir / "rocket.jpg", 0.5) == []


def test_ssd_label_offset_skips_background(ssd: Detector, media_dir: Path) -> None:
    """Class id 0 is 'person' (label map line 1; line 0 is the background '???')."""
    person = next(d for d in ssd(media_dir / "squat.png", 0.5) if d.label == "person")
    assert person.class_id == 0


def test_decoders_refuse_each_others_outputs(ssd: Detector, yolox: Detector) -> None:
    """Each decoder refuses a model whose outputs are of another family, naming the shapes."""
    with pytest.raises(
        ModelError, match=r"ssd-postprocess decoder expects 4 outputs.*\[1, 3549, 85\]"
    ):
        SsdPostprocessDecoder().check(yolox.model.outputs)
    with pytest.raises(ModelError, match=r"yolox decoder expects one output.*\[1, 10, 4\]"):
        YoloxDecoder().check(ssd.model.outputs)


def test_yolov8_layout_end_to_end(tmp_path: Path) -> None:
    """A [1, 84, N] output is decoded, NMS'd and mapped back through the letterbox exactly."""
    boxes = [
        (32.0, 24.0, 16.0, 8.0, 0, 0.9),  # person
        (33.0, 24.0, 16.0, 8.0, 0, 0.8),  # its duplicate: suppressed
        (48.0, 40.0, 8.0, 8.0, 16, 0.7),  # dog
        (10.0, 10.0, 4.0, 4.0, 2, 0.2),  # below threshold
    ]
    model = load_model(build_yolov8_model(tmp_path / "v8.onnx", boxes))
    decoder = YoloV8Decoder(labels=[f"c{i}" for i in range(80)])
    decoder.check(model.outputs)
    spec = ImageSpec.from_tensor(model.inputs[0], resize="letterbox", anchor="center")
    tensor, lb = preprocess(read_rgb_blank(64, 128), spec)  # 128x64 → 64x32, padded 16 px above
    found = decoder.decode(model.run([tensor]), lb, 0.5)
    assert [(d.label, round(d.score, 2)) for d in found] == [("c0", 0.9), ("c16", 0.7)]
    # person: input x 24..40, y 20..28 → source x 48..80 of 128, y (20-16)*2..(28-16)*2 = 8..24 of 64
    assert found[0].box == pytest.approx((48 / 128, 8 / 64, 80 / 128, 24 / 64))


def test_yolov8_rebuild_is_byte_identical(tmp_path: Path) -> None:
    """The test model is deterministic: rebuilding gives the same bytes."""
    boxes = [(32.0, 24.0, 16.0, 8.0, 0, 0.9)]
    a = build_yolov8_model(tmp_path / "a.onnx", boxes).read_bytes()
    b = build_yolov8_model(tmp_path / "b.onnx", boxes).read_bytes()
    assert a == b


def read_rgb_blank(h: int, w: int) -> npt.NDArray[np.uint8]:
    return np.zeros((h, w, 3), np.uint8)


def test_label_count_must_fit_the_class_axis(yolox: Detector) -> None:
    """A label file with a different number of classes than the model is refused at check time."""
    with pytest.raises(ModelError, match=r"80 classes, but 91 labels"):
        YoloxDecoder(labels=[f"c{i}" for i in range(91)]).check(yolox.model.outputs)
    v8 = TensorSpec("output0", (1, 84, 8400), np.dtype(np.float32))
    with pytest.raises(ModelError, match=r"neither axis is 4 \+ 91 labels"):
        YoloV8Decoder(labels=[f"c{i}" for i in range(91)]).check([v8])


def test_ssd_outputs_must_agree_on_n() -> None:
    """SSD outputs whose detection counts differ (boxes 10, scores 20) are refused."""
    f32 = np.dtype(np.float32)
    outs = [
        TensorSpec("boxes", (1, 10, 4), f32),
        TensorSpec("classes", (1, 10), f32),
        TensorSpec("scores", (1, 20), f32),
        TensorSpec("count", (1,), f32),
    ]
    with pytest.raises(ModelError, match=r"'scores' \[1, 20\]"):
        SsdPostprocessDecoder().check(outs)


def test_yolox_survives_absurd_box_sizes() -> None:
    """A corrupt head (size logit 1000) gives a clipped box, not an overflow."""
    pred = np.zeros((1, 21, 6), np.float32)  # a 32x32 input: 16 + 4 + 1 anchors
    pred[0, 0] = (0.0, 0.0, 1000.0, 1000.0, 0.9, 0.9)
    lb = Letterbox(32, 32, 32, 32, 1.0, 1.0, 0.0, 0.0)
    (det,) = YoloxDecoder(labels=["thing"]).decode([pred], lb, 0.5)
    assert det.box == (0.0, 0.0, 1.0, 1.0)
    assert det.score == pytest.approx(0.81)
