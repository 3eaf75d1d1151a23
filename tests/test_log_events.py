"""Every log event edged writes is named in one style, ``component.event`` (docs/logging.md).

The names are what operators grep the journal for and what alerts match, so
one style (dotted, lower snake_case parts) keeps them findable. The check reads
the source with :mod:`ast`: a log call is ``<logger>.<level>("name", ...)``
with a logger whose name contains ``log`` (``log``, ``self._log``,
``log.bind(...)``), also through a conditional
(``(log.error if burst else log.debug)("name")``) or an alias
(``emit = log.warning``), and the event given to a ``BurstLog`` (its
constructor or ``.note("name")``). An f-string's placeholders count as one
lower-case word (``f"rollout.{phase}"``); a name passed in a variable is
checked where the variable is assigned in the same module.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EVENT = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
LEVELS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "fatal"})


def _is_logger(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return "log" in node.id.lower()
    if isinstance(node, ast.Attribute):
        return "log" in node.attr.lower()
    if isinstance(node, ast.Call):  # log.bind(...).info, structlog.get_logger().info
        func = node.func
        return _is_logger(func) or (isinstance(func, ast.Attribute) and _is_logger(func.value))
    return False


def _is_level_call(func: ast.expr, aliases: set[str]) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr in LEVELS and _is_logger(func.value)
    if isinstance(func, ast.IfExp):
        return _is_level_call(func.body, aliases) and _is_level_call(func.orelse, aliases)
    return isinstance(func, ast.Name) and func.id in aliases


def _is_burst_event(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Name) and func.id == "BurstLog":
        return True
    if isinstance(func, ast.Attribute) and func.attr == "BurstLog":
        return True
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "note"
        and any(w in ast.unparse(func.value).lower() for w in ("log", "burst"))
    )


def _names(node: ast.expr, assigned: dict[str, list[ast.expr]]) -> Iterator[str]:
    """The event names ``node`` can be (placeholders as ``x``); nothing if it is not knowable."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.JoinedStr):
        yield "".join(v.value if isinstance(v, ast.Constant) else "x" for v in node.values)
    elif isinstance(node, ast.IfExp):
        yield from _names(node.body, assigned)
        yield from _names(node.orelse, assigned)
    elif isinstance(node, ast.Name):
        for value in assigned.get(node.id, []):
            yield from _names(value, {})


def log_events(source: str) -> list[tuple[int, str]]:
    """``(line, event name)`` of every log call in ``source`` whose name can be read."""
    tree = ast.parse(source)
    assigned: dict[str, list[ast.expr]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
    aliases = {
        name for name, values in assigned.items() if any(_is_level_call(v, set()) for v in values)
    }
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        if _is_level_call(node.func, aliases) or _is_burst_event(node):
            found.extend((node.lineno, name) for name in _names(node.args[0], assigned))
    return sorted(found)


def test_finder_reads_every_form_of_log_call() -> None:
    """The walker finds plain, bound, conditional, aliased, f-string, variable and burst events."""
    source = """
log.info("a.ok")
self._log.warning("Not Dotted")
log.bind(x=1).error("snake_case")
(self._log.error if burst else self._log.debug)("cond sentence")
emit = log.warning if bad else log.info
emit(f"rollout.{phase}")
event = "outbox.refusing" if full else "outbox_evicting"
log.warning(event)
self._bursts.note("cloud_unauthorized")
BurstLog("events.evicted")
sys.exception()
parser.error("not a log")
"""
    bad = [(line, name) for line, name in log_events(source) if not EVENT.match(name)]
    assert bad == [
        (3, "Not Dotted"),
        (4, "snake_case"),
        (5, "cond sentence"),
        (9, "outbox_evicting"),
        (10, "cloud_unauthorized"),
    ]


def test_every_log_event_is_component_dot_event() -> None:
    """Every event name in edged/ matches ``component.event`` (lower snake_case parts)."""
    offenders: list[str] = []
    total = 0
    for path in sorted((REPO / "edged").rglob("*.py")):
        for line, name in log_events(path.read_text()):
            total += 1
            if not EVENT.match(name):
                offenders.append(f"{path.relative_to(REPO)}:{line}: {name!r}")
    assert total > 100, f"only {total} log calls found: the walker no longer sees them"
    assert not offenders, "log events not in the component.event style:\n" + "\n".join(offenders)
