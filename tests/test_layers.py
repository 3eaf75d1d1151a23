"""The package layers of edged (docs/architecture.md): no import points upward, none cycles.

Every module under ``edged/`` is read with :mod:`ast`, never imported, so a
test run does not depend on import order and sees imports inside functions
too. Which imports count:

- **Layers:** every ``import``/``from … import`` of an ``edged`` module,
  wherever it is written — at module level, inside a function, and under
  ``if TYPE_CHECKING:``. A type-only import still makes the lower package
  name, and so know about, the higher one; and it turns into a runtime import
  the day someone needs the class for an ``isinstance``.
- **Cycles:** the imports that run (everything except ``if TYPE_CHECKING:``),
  including those inside functions: importing inside a function only hides a
  cycle from the interpreter until the function first runs.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "edged"

#: Lowest first; a module may import from its own layer and the ones before it.
#: ``(root)`` is every module directly under ``edged/``. Keep in step with
#: docs/architecture.md ("Layers").
LAYERS: tuple[tuple[str, ...], ...] = (
    ("(root)",),
    ("config",),
    ("infer", "catalog", "gate", "track", "preprocess", "capture", "decode"),
    ("tasks", "zones", "label"),
    ("publish",),
    ("events", "offload"),
    ("runtime",),
    ("control", "rollout"),
    ("daemon",),
    ("demo", "__main__"),
)


@dataclass(frozen=True, slots=True)
class Import:
    """One import of an edged module, as written in ``source``."""

    source: str  # importing module, e.g. edged.events.store
    target: str  # imported module, e.g. edged.log
    path: Path
    line: int
    type_only: bool  # under ``if TYPE_CHECKING:``


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    parts = module.split(".")
    name = parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] == "__main__") else None
    if name is None and len(parts) == 2 and (PACKAGE / parts[1]).is_dir():
        name = parts[1]
    key = name or "(root)"
    for i, layer in enumerate(LAYERS):
        if key in layer:
            return i
    raise AssertionError(f"{module}: package {key!r} is in no layer of LAYERS")


def layer_name(i: int) -> str:
    return "/".join(LAYERS[i])


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    if node.level:
        base = module.split(".")
        if path.name != "__init__.py":
            base.pop()
        base = base[: len(base) - (node.level - 1)]
        mod = ".".join([*base, node.module] if node.module else base)
    else:
        mod = node.module or ""
    # `from edged.infer import accel` imports the module edged.infer.accel.
    return [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]


def imports() -> Iterator[Import]:
    """Every import of an edged module in edged/, with where it is and whether it is type-only."""
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        type_only: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and _type_checking(node.test):
                for stmt in node.body:
                    type_only.update(id(n) for n in ast.walk(stmt))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = _resolve(module, path, node)
            else:
                continue
            for target in dict.fromkeys(targets):
                if target == "edged" or target.startswith("edged."):
                    yield Import(module, target, path, node.lineno, id(node) in type_only)


def test_every_package_has_a_layer() -> None:
    """A new package must be placed in LAYERS (and docs/architecture.md) before it is used."""
    for module in MODULES:
        layer_of(module)


def test_no_import_points_upward() -> None:
    """No module imports from a layer above its own, type-only imports included."""
    upward = []
    for imp in imports():
        low, high = layer_of(imp.source), layer_of(imp.target)
        if high > low:
            kind = " (TYPE_CHECKING)" if imp.type_only else ""
            upward.append(
                f"{imp.path.relative_to(ROOT)}:{imp.line}: {imp.source} [{layer_name(low)}] "
                f"imports {imp.target} [{layer_name(high)}]{kind}"
            )
    assert not upward, "imports pointing upward:\n" + "\n".join(upward)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path whose first and last module are the same, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_no_import_cycle() -> None:
    """No module reaches itself through the imports that run (TYPE_CHECKING excluded)."""
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    for imp in imports():
        if not imp.type_only and imp.source != imp.target:
            graph.setdefault(imp.source, set()).add(imp.target)
            where.setdefault((imp.source, imp.target), f"{imp.path.relative_to(ROOT)}:{imp.line}")
    cycle = _cycle(graph)
    assert cycle is None, "import cycle:\n" + "\n".join(
        f"{a} -> {b} ({where[(a, b)]})" for a, b in itertools.pairwise(cycle)
    )


@pytest.mark.parametrize(
    ("graph", "has_cycle"),
    [
        ({"a": {"b"}, "b": {"c"}}, False),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
        ({"a": {"b", "c"}, "b": {"c"}}, False),
    ],
)
def test_cycle_finder(graph: dict[str, set[str]], has_cycle: bool) -> None:
    """The cycle search finds a cycle exactly when there is one (so the test above can fail)."""
    assert (_cycle(graph) is not None) is has_cycle
