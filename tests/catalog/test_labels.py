"""Label names known without running a model, and the nearest valid names to a typo."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edged.catalog.catalog import load_catalog
from edged.catalog.labels import entry_labels, nearest, unknown_label
from edged.errors import CatalogError

COCO = ("person", "bicycle", "car", "dog", "cat")


def test_case_insensitive_match_is_suggested_first() -> None:
    """'Person' suggests 'person' first, ahead of anything difflib finds."""
    assert nearest("Person", COCO)[0] == "person"
    assert nearest("DOG", ("Dog", "Dogs", "Bark"))[0] == "Dog"


def test_typo_suggests_close_names() -> None:
    """A misspelt name suggests the close ones; a name close to nothing suggests nothing."""
    assert "bicycle" in nearest("bicyle", COCO)
    assert nearest("xylophone-zz", COCO) == []


def test_known_name_is_fine_and_unknown_name_is_explained() -> None:
    """A listed label passes; an unlisted one names itself and the suggestion."""
    assert unknown_label("person", COCO, "detection") is None
    msg = unknown_label("Person", COCO, "detection")
    assert msg is not None
    assert "'Person' is not a label of this model (did you mean 'person'" in msg


@pytest.mark.parametrize(
    ("task", "good", "bad"), [("detection", "class_3", "person"), ("audio", "12", "Speech")]
)
def test_model_without_labels_accepts_only_class_id_names(task: str, good: str, bad: str) -> None:
    """Without a label list results are named by id: only such names can match."""
    assert unknown_label(good, (), task) is None
    msg = unknown_label(bad, (), task)
    assert msg is not None
    assert "no label list" in msg


def test_entry_labels_read_bundled_and_downloaded_files(
    models_dir: Path, model_mirror: Path, tmp_path: Path
) -> None:
    """Bundled labels need nothing installed; downloaded ones come from models dir or mirror."""
    catalog = load_catalog()
    coco = entry_labels(catalog, catalog.get("yolox-nano-coco"), tmp_path, None)
    assert (len(coco), coco[0]) == (80, "person")
    yamnet = entry_labels(catalog, catalog.get("yamnet"), models_dir, None)
    assert (len(yamnet), yamnet[0]) == (521, "Speech")
    assert entry_labels(catalog, catalog.get("yamnet"), tmp_path, model_mirror) == yamnet


def test_entry_labels_refuse_missing_or_tampered_files(models_dir: Path, tmp_path: Path) -> None:
    """A label file that is absent or fails its sha256 is an error saying what to pull."""
    catalog = load_catalog()
    with pytest.raises(CatalogError, match="edged models pull yamnet"):
        entry_labels(catalog, catalog.get("yamnet"), tmp_path, None)
    shutil.copy(models_dir / "yamnet_class_map.csv", tmp_path)
    with (tmp_path / "yamnet_class_map.csv").open("a") as fh:
        fh.write("521,/m/x,Injected\n")
    with pytest.raises(CatalogError, match="sha256"):
        entry_labels(catalog, catalog.get("yamnet"), tmp_path, None)


def test_pose_model_has_no_label_list() -> None:
    """A pose model's entry says its results are keypoints, not labels."""
    catalog = load_catalog()
    with pytest.raises(CatalogError, match="keypoints"):
        entry_labels(catalog, catalog.get("movenet-lightning-int8"), Path("/nonexistent"), None)
