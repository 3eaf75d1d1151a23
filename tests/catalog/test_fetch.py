"""Pulling models: from a mirror or a real HTTP server on loopback, always sha256-verified."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from edged.catalog.catalog import Artifact, load_catalog
from edged.catalog.fetch import pull, pull_artifact, verify
from edged.errors import CatalogError


def artifact_for(data: bytes, name: str = "m.tflite", **kw: object) -> Artifact:
    return Artifact(name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data), **kw)  # type: ignore[arg-type]


def test_catalog_lists_the_four_reference_models() -> None:
    """The bundled catalog names the reference models of docs/configuration.md."""
    names = load_catalog().names()
    assert {
        "ssd-mobilenet-v1-coco-int8",
        "yolox-nano-coco",
        "movenet-lightning-int8",
        "yamnet",
    } <= set(names)


def test_mirror_pull_installs_verified_files(model_mirror: Path, tmp_path: Path) -> None:
    """Every catalog file is copied from the mirror and matches its sha256."""
    catalog = load_catalog()
    for name in catalog.names():
        for item in pull(catalog.get(name), tmp_path, mirror=model_mirror):
            assert item.origin.startswith("mirror:")
    for entry in catalog.models:
        for art in entry.artifacts():
            assert verify(art, tmp_path / art.name) is None


def test_second_pull_keeps_verified_file(model_mirror: Path, tmp_path: Path) -> None:
    """An installed file with the right hash is not fetched again."""
    entry = load_catalog().get("yamnet")
    pull(entry, tmp_path, mirror=model_mirror)
    again = pull(entry, tmp_path, mirror=model_mirror)
    assert {i.origin for i in again} == {"present"}


def test_url_download_over_http(http_root: tuple[str, Path], tmp_path: Path) -> None:
    """A file is downloaded from its URL when no mirror has it."""
    base, root = http_root
    data = b"model-bytes" * 1000
    (root / "m.tflite").write_bytes(data)
    art = artifact_for(data, urls=[f"{base}/m.tflite"])
    item = pull_artifact(art, tmp_path / "models")
    assert item.origin == f"{base}/m.tflite"
    assert (tmp_path / "models" / "m.tflite").read_bytes() == data


def test_url_falls_back_to_next_url(http_root: tuple[str, Path], tmp_path: Path) -> None:
    """A 404 on the first URL is skipped and the second URL is used."""
    base, root = http_root
    data = b"abc" * 100
    (root / "b.bin").write_bytes(data)
    art = artifact_for(data, name="b.bin", urls=[f"{base}/missing", f"{base}/b.bin"])
    assert pull_artifact(art, tmp_path).origin.endswith("/b.bin")


def test_sha256_mismatch_is_refused_and_not_installed(
    http_root: tuple[str, Path], tmp_path: Path
) -> None:
    """A tampered download is refused, and nothing appears under the real name."""
    base, root = http_root
    (root / "m.tflite").write_bytes(b"tampered")
    art = artifact_for(b"original", urls=[f"{base}/m.tflite"])
    dest = tmp_path / "models"
    with pytest.raises(CatalogError, match="sha256 mismatch"):
        pull_artifact(art, dest)
    assert list(dest.iterdir()) == []


def test_archive_member_is_extracted(http_root: tuple[str, Path], tmp_path: Path) -> None:
    """A label file published only inside a zip is extracted and verified."""
    base, root = http_root
    labels = b"???\nperson\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pkg/labelmap.txt", labels)
        zf.writestr("pkg/detect.tflite", b"x")
    (root / "pkg.zip").write_bytes(buf.getvalue())
    art = artifact_for(
        labels, name="labels.txt", urls=[f"{base}/pkg.zip"], archive_member="labelmap.txt"
    )
    pull_artifact(art, tmp_path)
    assert (tmp_path / "labels.txt").read_bytes() == labels


def test_no_source_names_everything_tried(tmp_path: Path) -> None:
    """When neither mirror nor URL has the file, the error lists what was tried."""
    art = artifact_for(b"x", urls=["http://127.0.0.1:9/none"])
    with pytest.raises(CatalogError, match=r"mirror .*no file m\.tflite.*127\.0\.0\.1:9"):
        pull_artifact(art, tmp_path / "models", mirror=tmp_path)
