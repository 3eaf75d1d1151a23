"""A model's label names without running it, and the nearest names to a typo.

Pipelines filter results by label name (``labels = ["person"]``). A name the
model never reports filters out everything, silently; so ``edged check`` and
``edged run`` compare every name with the model's list (read from the
catalog's label file, as :func:`~edged.catalog.resolve.resolve` does), and
``edged models labels NAME`` prints that list.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path

from edged.catalog.catalog import Catalog, CatalogEntry
from edged.catalog.fetch import verify
from edged.catalog.resolve import read_labels
from edged.errors import CatalogError

#: How results are named when a model has no label list (see the decoders):
#: detections ``class_<id>``, audio classes ``<id>``. Pose results carry no label.
UNLABELLED_NAME: dict[str, re.Pattern[str]] = {
    "detection": re.compile(r"class_\d+"),
    "audio": re.compile(r"\d+"),
}


def nearest(name: str, known: Sequence[str], n: int = 3) -> list[str]:
    """Up to ``n`` valid names close to ``name``; a match ignoring case comes first.

    ``"Person"`` for COCO's ``"person"`` is the most common mistake, and
    difflib alone ranks it below nothing (it compares case-sensitively).
    """
    folded = name.casefold()
    by_fold: dict[str, str] = {}
    for k in known:
        by_fold.setdefault(k.casefold(), k)
    same = [k for k in known if k.casefold() == folded]
    close = [by_fold[m] for m in difflib.get_close_matches(folded, list(by_fold), n=n)]
    return list(dict.fromkeys(same + close))[:n]


def unknown_label(name: str, known: Sequence[str], task: str) -> str | None:
    """Why ``name`` can never match a result of a ``task`` model with labels ``known``; else None."""
    if known:
        if name in known:
            return None
        close = nearest(name, known)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        return f"{name!r} is not a label of this model{hint}"
    pattern = UNLABELLED_NAME.get(task)
    if pattern is None or pattern.fullmatch(name):
        return None
    example = "class_0" if task == "detection" else "0"
    return (
        f"{name!r} cannot match: this model has no label list, so its results are named "
        f"by class id (e.g. {example!r}); give the pipeline a label_file or use those names"
    )


def entry_labels(
    catalog: Catalog, entry: CatalogEntry, models_dir: Path, mirror: Path | None
) -> tuple[str, ...]:
    """The label names of a catalog (or local catalog) entry, index = class id.

    Read from the bundled file, else the installed copy in ``models_dir``,
    else the ``mirror``; a downloaded file counts only when its sha256 matches.
    The model file itself is not needed. CatalogError says what to pull.
    """
    spec = entry.labels
    if spec is None:
        what = (
            "its results are keypoints of a person, with no label names"
            if entry.task == "pose"
            else "its results are named by class id"
        )
        raise CatalogError(f"model {entry.name!r} ({entry.task}) has no label list: {what}")
    if spec.bundled:
        return read_labels(catalog.root / spec.bundled, spec)
    art = spec.artifact()
    assert art is not None  # a LabelSpec has exactly one of bundled / name
    problems = []
    for folder in (models_dir, mirror):
        if folder is None:
            continue
        problem = verify(art, folder / art.name)
        if problem is None:
            return read_labels(folder / art.name, spec)
        problems.append(problem)
    raise CatalogError(
        f"the labels of {entry.name!r} are not available ({'; '.join(problems)}); "
        f"run `edged models pull {entry.name}`"
    )
