"""Hypothesis strategies for config files: malformed, odd, and valid-but-different (issue 13).

:func:`config_files` draws the bytes of a file derived from a valid config:
random bytes, invalid UTF-8, deep nesting, huge numbers, inf/nan, NUL and
control characters, wrong types, unknown keys, truncation, and now and then a
valid config that differs from the running one. Each draw says whether it is
*meant* to be valid; whether it is is what ``load_settings`` decides.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import strategies as st

#: Odd scalar values for any key.
ODD_SCALARS = st.one_of(
    st.sampled_from(
        [math.inf, -math.inf, math.nan, 1e308, -1e308, 5e-324, -0.0, 0, -1, 2**63, -(2**63)]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.text(max_size=30),
    st.sampled_from(["", "\x00", "a\x00b", "/tmp/a\x00b", "\n", "x" * 5000, "+", "#", "é/ü"]),
)
ODD_VALUES = st.one_of(
    ODD_SCALARS,
    st.lists(ODD_SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=8), ODD_SCALARS, max_size=3),
)


@dataclass(frozen=True)
class ConfigFile:
    """A drawn file and how it was made (for failure reports)."""

    data: bytes
    how: str
    valid: bool = False

    def write(self, path: Path) -> None:
        path.write_bytes(self.data)


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every key (and list entry) of a config dict."""
    out: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        out.append((*path, key))
        if isinstance(value, dict | list):
            out += _leaves(value, (*path, key))
    return out


def _dump(cfg: dict[str, Any]) -> bytes:
    try:
        return tomli_w.dumps(cfg).encode()
    except (TypeError, ValueError):  # e.g. an int beyond 4,300 digits, or None
        return b"unwritable = [\n"


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@st.composite
def _mutated(draw: st.DrawFn, good: dict[str, Any]) -> ConfigFile:
    """Set, add or delete a few keys of ``good`` with odd values."""
    cfg = copy.deepcopy(good)
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        paths = _leaves(cfg)
        path = draw(st.sampled_from(paths))
        parent: Any = cfg
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["set", "set", "delete", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            name = draw(st.text(min_size=1, max_size=12))
            parent[name] = draw(ODD_VALUES)
        else:
            parent[path[-1]] = draw(ODD_VALUES)
        steps.append(f"{action} {path}")
    return ConfigFile(_dump(cfg), "mutated: " + "; ".join(steps))


@st.composite
def _nested(draw: st.DrawFn, good_text: bytes) -> ConfigFile:
    depth = draw(st.integers(1, 3_000))  # tomllib gives up near 1,000
    if draw(st.booleans()):
        tail = b"[" * depth + b"]" * depth
    else:
        tail = b"{a = " * depth + b"1" + b"}" * depth
    return ConfigFile(good_text + b"\nnested = " + tail + b"\n", f"nested {depth}")


@st.composite
def _bad_bytes(draw: st.DrawFn, good_text: bytes) -> ConfigFile:
    """``good_text`` with a few bytes inserted (often invalid UTF-8) or the end cut off."""
    data = bytearray(good_text)
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data)))
        return ConfigFile(bytes(data[:cut]), f"truncated at {cut}")
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(
            st.one_of(
                st.sampled_from([b"\xfc", b"\xff", b"\x00", b"\xc3"]),
                st.binary(min_size=1, max_size=4),
            )
        )
    return ConfigFile(bytes(data), "bytes inserted")


@st.composite
def _huge_number(draw: st.DrawFn, good_text: bytes) -> ConfigFile:
    key = draw(st.sampled_from(["max_fps", "fps", "threshold", "port", "stats_interval_s"]))
    value = draw(
        st.sampled_from(
            [
                b"1" + b"0" * 5000,
                b"inf",
                b"-inf",
                b"nan",
                b"1e308",
                b"5e-324",
                b"1e999",
                b"0x" + b"f" * 5000,
            ]
        )
    )
    text = good_text.replace(
        f"\n{key} = ".encode(), f"\n{key} = {value.decode()}\nold_{key} = ".encode(), 1
    )
    return ConfigFile(text, f"{key} = {value[:20]!r}")


@st.composite
def _different(draw: st.DrawFn, good: dict[str, Any]) -> ConfigFile:
    """A valid config that differs from ``good`` in values a reload applies."""
    cfg = copy.deepcopy(good)
    pipeline = cfg["pipelines"][0]
    pipeline["threshold"] = draw(st.floats(0.3, 0.9))
    pipeline["max_fps"] = draw(st.floats(2.0, 10.0))
    return ConfigFile(_dump(cfg), "valid, different values", valid=True)


def config_files(good: dict[str, Any], *, valid_percent: int = 3) -> st.SearchStrategy[ConfigFile]:
    """Files derived from the valid config ``good``; about ``valid_percent`` % are valid."""
    good = _plain(good)
    text = _dump(good)
    broken = st.one_of(
        st.binary(max_size=300).map(lambda b: ConfigFile(b, "random bytes")),
        _mutated(good),
        _mutated(good),
        _nested(text),
        _bad_bytes(text),
        _huge_number(text),
    )
    return st.integers(0, 99).flatmap(lambda n: _different(good) if n < valid_percent else broken)
