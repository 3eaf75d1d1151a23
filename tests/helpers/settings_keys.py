"""Every numeric settings key with its range, and a way to set one in a config dict.

Shared by the edge tests of the ranges (tests/config/test_settings_bounds.py) and
the property test that runs configs drawn near them (tests/test_run_properties.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic.fields import FieldInfo

from edged.config.reference import SECTIONS, bounds

#: Where each section lives in a config dict (list sections: their first entry).
_PATHS: dict[str, tuple[str | int, ...]] = {
    "(top level)": (),
    "[[sources]]": ("sources", 0),
    "[[pipelines]]": ("pipelines", 0),
    "[pipelines.offload]": ("pipelines", 0, "offload"),
    "[pipelines.fall]": ("pipelines", 0, "fall"),
    "[pipelines.sound_events]": ("pipelines", 0, "sound_events"),
    "[[pipelines.zones]]": ("pipelines", 0, "zones", 0),
    "[[pipelines.masks]]": ("pipelines", 0, "masks", 0),
    "[[pipelines.lines]]": ("pipelines", 0, "lines", 0),
}

#: A valid first entry of each list section, so that one key of it can be set alone.
_ENTRIES: dict[str, dict[str, Any]] = {
    "zones": {"name": "zone", "polygon": [[0, 0], [1, 0], [1, 1]]},
    "masks": {"polygon": [[0, 0], [1, 0], [1, 1]]},
    "lines": {"name": "line", "a": [0, 0.5], "b": [1, 0.5]},
}


@dataclass(frozen=True)
class NumericKey:
    """One int or float key: its path as ``check`` prints it, where it lives, its range."""

    path: str
    where: tuple[str | int, ...]
    name: str
    info: FieldInfo

    @property
    def integer(self) -> bool:
        return self.info.annotation is int

    @property
    def range(self) -> tuple[float, float]:
        low, high = bounds(self.info)
        assert low is not None, self.path
        assert high is not None, self.path
        return low, high

    def set(self, cfg: dict[str, Any], value: Any) -> dict[str, Any]:
        """``cfg`` with this key set to ``value`` (in place; sections created as needed)."""
        node: Any = cfg
        for part, after in zip(self.where, [*self.where[1:], None], strict=False):
            if isinstance(node, dict) and part not in node:
                node[part] = [dict(_ENTRIES[str(part)])] if after == 0 else {}
            node = node[part]
        node[self.name] = value
        return cfg


def numeric_keys() -> Iterator[NumericKey]:
    """Every int/float key of every section."""
    for title, model, _ in SECTIONS:
        where = _PATHS.get(title, (title.strip("[]"),))
        prefix = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where)
        for name, info in model.model_fields.items():
            if info.annotation in (int, float):
                yield NumericKey((prefix + "." + name).lstrip("."), where, name, info)
