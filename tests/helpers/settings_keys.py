"""Every numeric settings key with its range, and a way to set one in a config dict.

Shared by the edge tests of the ranges (tests/test_settings_bounds.py) and
the property test that runs configs drawn near them (tests/test_run_properties.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic.fields import FieldInfo

from edged.config_doc import SECTIONS, bounds

#: Where each section lives in a config dict (list sections: their first entry).
_PATHS: dict[str, tuple[str | int, ...]] = {
    "(top level)": (),
    "[[sources]]": ("sources", 0),
    "[[pipelines]]": ("pipelines", 0),
    "[pipelines.offload]": ("pipelines", 0, "offload"),
    "[pipelines.fall]": ("pipelines", 0, "fall"),
    "[pipelines.sound_events]": ("pipelines", 0, "sound_events"),
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
        for part in self.where:
            if isinstance(node, dict) and part not in node:
                node[part] = {}
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
