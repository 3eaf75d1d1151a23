"""The model catalog: which models exist, where to get them, what they must look like.

The catalog is a TOML file (``models/catalog.toml`` in the source tree,
installed to ``<prefix>/share/edged/models``, see :func:`data_dir`). It is parsed into frozen
pydantic models so that a broken catalog fails with the entry and key named.

Models made on the device (``edged models quantize``) are described by a
*local catalog*, ``<models dir>/local-catalog.toml``, in the same format. It
is merged into the bundled one when :func:`load_catalog` is given the models
dir; its entries carry no URL, since their file exists only on this device.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edged.errors import CatalogError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Artifact(_Strict):
    """One downloadable file, verified by sha256."""

    name: str = Field(description="File name, in the models dir and in a mirror.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(gt=0, description="Size in bytes (a cheap first check).")
    urls: list[str] = Field(default_factory=list, description="Official download locations.")
    archive_member: str = Field("", description="When the URL is a zip: the member to extract.")


class LabelSpec(_Strict):
    """Where a model's class names come from and how to read them."""

    name: str = ""
    sha256: str = Field("", pattern=r"^([0-9a-f]{64})?$")
    size: int = 0
    urls: list[str] = Field(default_factory=list)
    archive_member: str = ""
    bundled: str = Field("", description="Path relative to the catalog (shipped with edged).")
    format: Literal["lines", "csv"] = "lines"
    offset: int = Field(0, ge=0, description="Lines to skip: class id c is entry c + offset.")
    column: str = Field("display_name", description="CSV column holding the names.")

    @model_validator(mode="after")
    def _one_origin(self) -> LabelSpec:
        if bool(self.bundled) == bool(self.name):
            raise ValueError("labels need exactly one of 'bundled' or 'name' (+ sha256)")
        if self.name and not self.sha256:
            raise ValueError(f"labels file {self.name!r} needs a sha256")
        return self

    def artifact(self) -> Artifact | None:
        """The downloadable label file, or None when labels ship with edged."""
        if not self.name:
            return None
        return Artifact(
            name=self.name,
            sha256=self.sha256,
            size=self.size or 1,
            urls=self.urls,
            archive_member=self.archive_member,
        )


class InputHints(_Strict):
    """Preprocessing facts the model file does not carry."""

    color: Literal["rgb", "bgr"] = "rgb"
    resize: Literal["stretch", "letterbox"] = "stretch"
    anchor: Literal["topleft", "center"] = "center"
    pad_value: int = Field(0, ge=0, le=255)
    mean: float = 0.0
    std: float = Field(1.0, gt=0)


class Expectation(_Strict):
    """What the file must declare; checked before a model is accepted."""

    input_shape: list[int] = Field(default_factory=list)
    input_dtype: str = ""


class CatalogEntry(_Strict):
    """One model of the catalog."""

    name: str
    task: Literal["detection", "pose", "audio"]
    decoder: str
    runtime: Literal["litert", "onnxruntime"]
    license: str
    description: str = ""
    file: Artifact
    labels: LabelSpec | None = None
    input: InputHints = Field(default_factory=InputHints)
    expect: Expectation = Field(default_factory=Expectation)
    derived_from: str = Field(
        "", description="Catalog name this model was made from on the device (local catalog)."
    )

    def artifacts(self) -> list[Artifact]:
        """Every file ``models pull`` must fetch for this model."""
        extra = self.labels.artifact() if self.labels else None
        return [self.file] + ([extra] if extra else [])


class Catalog(_Strict):
    """All catalog entries plus the directory the catalog was read from."""

    root: Path
    models: list[CatalogEntry] = Field(alias="model", default_factory=list)

    def get(self, name: str) -> CatalogEntry:
        """The entry called ``name``; CatalogError listing the known names otherwise."""
        for entry in self.models:
            if entry.name == name:
                return entry
        known = ", ".join(e.name for e in self.models)
        raise CatalogError(f"model {name!r} is not in the catalog {self.root} (known: {known})")

    def names(self) -> list[str]:
        return [e.name for e in self.models]


def data_dir() -> Path:
    """Where edged's shipped data is: the catalog, label lists, golden sets, sample media.

    ``models/`` at the top of a source tree (a checkout, an editable install),
    else the copy ``pip install`` put under ``<prefix>/share/edged/models``
    (the data-files of pyproject.toml).
    """
    source_tree = Path(__file__).resolve().parents[2] / "models"
    if (source_tree / "catalog.toml").is_file():
        return source_tree
    return Path(sys.prefix) / "share" / "edged" / "models"


def default_catalog_path() -> Path:
    """Find the catalog: ``EDGED_CATALOG``, else the shipped one (:func:`data_dir`)."""
    env = os.environ.get("EDGED_CATALOG")
    if env:
        return Path(env)
    return data_dir() / "catalog.toml"


#: File name of the local catalog inside the models dir.
LOCAL_CATALOG = "local-catalog.toml"


def load_catalog(path: Path | None = None, *, models_dir: Path | None = None) -> Catalog:
    """Parse and validate a catalog file (default: :func:`default_catalog_path`).

    With ``models_dir``, the entries of ``<models_dir>/local-catalog.toml``
    (models made on this device) are appended when that file exists. A local
    entry may not reuse a bundled name: a pull of the bundled model would
    otherwise be verified against the local hash, or the reverse.
    """
    catalog = _load_one(path or default_catalog_path())
    local = models_dir / LOCAL_CATALOG if models_dir is not None else None
    if local is None or not local.is_file():
        return catalog
    extra = _load_one(local)
    clash = sorted(set(catalog.names()) & set(extra.names()))
    if clash:
        raise CatalogError(
            f"local catalog {local} redefines bundled model(s) {', '.join(clash)}; "
            "rename the local entries"
        )
    # The bundled root stays the root: bundled label files of a derived model
    # (e.g. labels/coco80.txt) are found next to the bundled catalog.
    return catalog.model_copy(update={"models": [*catalog.models, *extra.models]})


def _load_one(path: Path) -> Catalog:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise CatalogError(
            f"model catalog {path} not found (set EDGED_CATALOG or [models] catalog)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"model catalog {path} is not valid TOML: {exc}") from None
    try:
        catalog = Catalog(root=path.parent, **data)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise CatalogError(f"model catalog {path} is invalid: {where}") from None
    names = catalog.names()
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise CatalogError(f"model catalog {path} names {', '.join(dups)} more than once")
    return catalog
