"""Turn a pipeline's ``model`` setting into files on disk plus what is needed to run them."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from edged.catalog.catalog import Catalog, CatalogEntry, InputHints, LabelSpec
from edged.catalog.fetch import sha256_file, verify
from edged.config.settings import PipelineSettings, Settings
from edged.errors import CatalogError


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Everything a pipeline needs to load and decode its model."""

    name: str
    task: str
    path: Path
    sha256: str
    decoder: str
    runtime: str  # "auto" for models given by path
    labels: tuple[str, ...]
    hints: InputHints
    entry: CatalogEntry | None  # None for a model given by path


def mirror_dir(settings: Settings) -> Path | None:
    """The local mirror: ``[models] mirror``, else ``EDGED_MODEL_MIRROR``, else none."""
    if settings.models.mirror is not None:
        return settings.models.mirror
    env = os.environ.get("EDGED_MODEL_MIRROR")
    return Path(env) if env else None


def read_labels(path: Path, spec: LabelSpec) -> tuple[str, ...]:
    """Read class names so that index ``i`` is the name of output class ``i``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read labels {path}: {exc.strerror}") from None
    if spec.format == "csv":
        rows = list(csv.DictReader(text.splitlines()))
        if rows and spec.column not in rows[0]:
            raise CatalogError(f"labels {path} have no column {spec.column!r}")
        names = [r[spec.column] for r in rows]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    return tuple(names[spec.offset :])


def _labels_path(catalog: Catalog, entry: CatalogEntry, models_dir: Path) -> Path | None:
    if entry.labels is None:
        return None
    if entry.labels.bundled:
        return catalog.root / entry.labels.bundled
    return models_dir / entry.labels.name


def resolve(pipeline: PipelineSettings, settings: Settings, catalog: Catalog) -> ResolvedModel:
    """Find the installed files of ``pipeline.model`` and verify them.

    A catalog name must have been pulled (``edged models pull``) into
    ``[models] dir``; its sha256 is checked here, every start, because a
    corrupted model can produce confident garbage rather than an error.
    A path is taken as it is, with ``decoder`` and ``label_file`` from the pipeline.
    """
    ref = pipeline.model
    looks_like_path = "/" in ref or ref.endswith((".onnx", ".tflite"))
    if looks_like_path:
        path = Path(ref)
        if not path.is_file():
            raise CatalogError(f"model file {path} not found")
        if not pipeline.decoder:
            raise CatalogError(
                "a model given by path needs 'decoder' (e.g. 'yolox', 'yolov8', 'ssd-postprocess')"
            )
        labels: tuple[str, ...] = ()
        if pipeline.label_file is not None:
            labels = read_labels(pipeline.label_file, LabelSpec(bundled="-", format="lines"))
        return ResolvedModel(
            name=path.stem,
            task=pipeline.task,
            path=path,
            sha256=sha256_file(path),
            decoder=pipeline.decoder,
            runtime="auto",
            labels=labels,
            hints=InputHints(),
            entry=None,
        )
    entry = catalog.get(ref)
    if entry.task != pipeline.task:
        raise CatalogError(
            f"model {ref!r} is a {entry.task} model, but the pipeline's task is {pipeline.task!r}"
        )
    return resolve_entry(catalog, entry, settings.models.dir, decoder=pipeline.decoder)


def resolve_entry(
    catalog: Catalog, entry: CatalogEntry, models_dir: Path, *, decoder: str = ""
) -> ResolvedModel:
    """The installed, sha256-verified files of one catalog entry (no pipeline needed).

    Used by :func:`resolve` and by tools that work on models rather than
    pipelines (``edged models bench``, ``quantize``). ``decoder`` overrides
    the entry's decoder family when not empty.
    """
    ref = entry.name
    path = models_dir / entry.file.name
    problem = verify(entry.file, path)
    if problem is not None:
        raise CatalogError(f"{problem}; run `edged models pull {ref}`")
    labels: tuple[str, ...] = ()
    if entry.labels is not None:
        lpath = _labels_path(catalog, entry, models_dir)
        assert lpath is not None
        art = entry.labels.artifact()
        if art is not None and (lproblem := verify(art, lpath)) is not None:
            raise CatalogError(f"{lproblem}; run `edged models pull {ref}`")
        labels = read_labels(lpath, entry.labels)
    return ResolvedModel(
        name=entry.name,
        task=entry.task,
        path=path,
        sha256=entry.file.sha256,
        decoder=decoder or entry.decoder,
        runtime=entry.runtime,
        labels=labels,
        hints=entry.input,
        entry=entry,
    )
