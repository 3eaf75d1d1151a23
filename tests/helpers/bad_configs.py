"""Malformed config files of every kind the loader must refuse (issue 13.5), for any test.

``make_bad(kind, path, good)`` puts a broken variant of the valid TOML text
``good`` at ``path`` and returns what the refusal must mention.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

#: kind → the words the ConfigError must contain.
KINDS: dict[str, str] = {
    "latin1": "not UTF-8 text: byte 0xfc at line 1, column 4",
    "deep_array": "nested too deeply",
    "deep_inline_table": "nested too deeply",
    "syntax": "not valid TOML",
    "huge_integer": "not valid TOML",
    "directory": "is a directory",
    "missing": "not found",
    "fifo": "not a regular file",
    "oversized": "larger than 1024 KiB",
    "loader_option": "_cli_parse_args: unknown key",
    "invalid_value": "pipelines[0].max_fps",
}


def make_bad(kind: str, path: Path, good: str) -> str:
    """Replace ``path`` by the ``kind`` of broken config; the text its refusal must contain."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    match kind:
        case "latin1":  # an editor saving in ISO-8859-1
            path.write_bytes(b"# K\xfcche\n" + good.encode())
        case "deep_array":
            path.write_text(good + "\nextra = " + "[" * 10_000 + "]" * 10_000 + "\n")
        case "deep_inline_table":
            path.write_text(good + "\nextra = " + "{a = " * 3_000 + "1" + "}" * 3_000 + "\n")
        case "syntax":
            path.write_text(good + "\n[mqtt\n")
        case "huge_integer":
            path.write_text(good + "\nextra = 1" + "0" * 5_000 + "\n")
        case "directory":
            path.mkdir()
        case "missing":
            pass
        case "fifo":
            os.mkfifo(path)
        case "oversized":
            path.write_text(good + "\n" + "#" * (1 << 20) + "\n")
        case "loader_option":  # pydantic-settings would take it as its own option
            path.write_text("_cli_parse_args = true\n" + good)
        case "invalid_value":  # ``good`` must set its first pipeline's max_fps
            path.write_text(
                re.sub(r"^max_fps = .*$", "max_fps = 5e-324", good, count=1, flags=re.M)
            )
        case _:
            raise ValueError(kind)
    return KINDS[kind]
