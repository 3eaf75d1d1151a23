"""``edged models select``: the cheapest model that meets every requirement.

Candidates are walked from cheapest to most expensive, where *cost* is
``size (MB) x median latency (ms)`` on this device: a product, so that a
model must be both small (storage, memory, download) and fast (CPU, energy)
to count as cheap, and neither can hide the other. Ties go by name. The walk
stops at the first candidate whose label meets every requirement; the ones
after it are "not tried". Requirements are ``METRIC OP NUMBER`` with OP one
of ``>= <= > < ==``; METRIC is any number of the label: ``p50_ms``,
``p95_ms``, ``p99_ms``, ``size_mb``, ``peak_mb``, ``energy_mj``,
``throughput``, or an accuracy metric of the golden set (``recall(person)``,
``precision``, ``f1``, ``pck``, ``top1``, …).

A candidate is a (model, accelerator) pair, named ``model`` on the CPU and
``model@accelerator`` otherwise (``yolox-nano-coco@openvino``), each with its
own label. A pair whose label failed the accuracy-parity check against the
CPU (:mod:`edged.label.parity`) is never chosen, whatever its numbers.
"""

from __future__ import annotations

import operator
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edged.config.settings import parse_requirement
from edged.errors import EdgedError
from edged.label.nutrition import NutritionLabel


class SelectError(EdgedError):
    """Requirements are malformed, or a config cannot be written."""


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}


@dataclass(frozen=True, slots=True)
class Requirement:
    """One bar a model must clear, e.g. ``recall(person) >= 0.9``."""

    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Requirement:
        """Parse ``METRIC OP NUMBER``; SelectError naming the expected form otherwise."""
        try:
            metric, op, value = parse_requirement(text)
        except ValueError as exc:
            raise SelectError(str(exc)) from None
        return cls(metric, op, value)

    def __str__(self) -> str:
        # Exactly what parse() reads back: a bar printed with 6 digits and
        # parsed again could let through a model that misses it by a hair.
        short = f"{self.value:g}"
        return f"{self.metric}{self.op}{short if float(short) == self.value else repr(self.value)}"

    def failure(self, metrics: Mapping[str, float | None]) -> str | None:
        """None when met, else why not (``recall(person)=0.857, needs >=0.9``)."""
        got = metrics.get(self.metric)
        if got is None:
            why = "undefined" if self.metric in metrics else "not measured"
            return f"{self.metric} {why}, needs {self.op}{self.value:g}"
        if _OPS[self.op](got, self.value):
            return None
        return f"{self.metric}={got:.4g}, needs {self.op}{self.value:g}"

    @property
    def higher_is_better(self) -> bool:
        return self.op in (">=", ">")


Verdict = Literal["chosen", "failed", "not tried", "not measured"]


@dataclass
class Trial:
    """One candidate as the walk saw it."""

    model: str
    label: NutritionLabel | None
    verdict: Verdict = "not tried"
    reasons: list[str] = field(default_factory=list)

    @property
    def cost(self) -> float | None:
        return self.label.cost() if self.label is not None else None


@dataclass
class Selection:
    """The outcome: the trials in walk order, the chosen model, and why (not)."""

    requirements: list[Requirement]
    trials: list[Trial]
    chosen: str | None
    explanation: str


def check_metrics(
    requirements: Sequence[Requirement], labels: Mapping[str, NutritionLabel | None]
) -> None:
    """SelectError for a metric that no measured candidate has (a typo, or a label not evaluated)."""
    known: set[str] = set()
    for label in labels.values():
        if label is not None:
            known |= set(label.metrics())
    if not known:
        return
    for req in requirements:
        if req.metric not in known:
            raise SelectError(
                f"no candidate has a metric {req.metric!r}; measured metrics: "
                + ", ".join(sorted(known))
            )


def select(
    requirements: Sequence[Requirement], labels: Mapping[str, NutritionLabel | None]
) -> Selection:
    """Walk candidates cheapest first; the first that meets every requirement is chosen."""
    measured = sorted(
        ((name, label) for name, label in labels.items() if label is not None),
        key=lambda item: (item[1].cost() or float("inf"), item[0]),
    )
    trials = [Trial(name, label) for name, label in measured]
    trials += [
        Trial(name, None, "not measured", ["no label: run `edged models bench`"])
        for name, label in sorted(labels.items())
        if label is None
    ]
    chosen: str | None = None
    for trial in trials:
        if trial.label is None:
            continue
        if chosen is not None:
            break  # the rest stay "not tried": a cheaper model already passes
        metrics = trial.label.metrics()
        trial.reasons = [r for req in requirements if (r := req.failure(metrics)) is not None]
        parity = trial.label.parity
        if parity is not None and not parity.passed:
            trial.reasons.insert(
                0,
                f"accuracy parity failed vs {parity.reference} "
                f"({', '.join(parity.failed)} dropped more than {parity.tolerance:g})",
            )
        trial.verdict = "failed" if trial.reasons else "chosen"
        if not trial.reasons:
            chosen = trial.model
    if chosen is not None:
        explanation = f"{chosen} is the cheapest model that meets {_join(requirements)}"
    else:
        explanation = _why_none(requirements, trials)
    return Selection(list(requirements), trials, chosen, explanation)


def _join(requirements: Sequence[Requirement]) -> str:
    return ", ".join(str(r) for r in requirements) or "no requirement"


def _why_none(requirements: Sequence[Requirement], trials: Sequence[Trial]) -> str:
    """Say which bars no model reaches at all, and the best value seen for each."""
    measured = {t.model: t.label.metrics() for t in trials if t.label is not None}
    if not measured:
        return "no candidate has a label: run `edged models bench --all` first"
    lines = [f"no model meets {_join(requirements)}:"]
    for req in requirements:
        values = [(v, name) for name, m in measured.items() if (v := m.get(req.metric)) is not None]
        if not values:
            lines.append(f"  {req}: no candidate has this metric")
            continue
        best, who = max(values) if req.higher_is_better else min(values)
        met = sum(1 for m in measured.values() if req.failure(m) is None)
        if met == 0:
            lines.append(f"  {req}: no candidate reaches it (best {best:.4g}, {who})")
        else:
            lines.append(
                f"  {req}: met by {met} of {len(measured)}, but not together with the rest"
            )
    lines.append("relax a requirement, or add a model (e.g. `edged models quantize`)")
    return "\n".join(lines)


def write_config(
    path: Path,
    pipeline: str,
    model: str,
    task: str | None = None,
    accelerator: str | None = None,
) -> None:
    """Set ``model`` (and ``accelerator``, when given) of pipeline ``pipeline`` in a TOML
    config, keeping the rest of the file.

    tomlkit (a round-trip TOML library) keeps comments, key order and
    formatting; tomllib/tomli-w would rewrite the operator's file from scratch.
    The file is replaced atomically, keeping its permissions.
    """
    import tomlkit  # noqa: PLC0415
    from tomlkit.exceptions import TOMLKitError  # noqa: PLC0415

    try:
        doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SelectError(f"config {path} not found") from None
    except TOMLKitError as exc:
        raise SelectError(f"config {path} is not valid TOML: {exc}") from None
    pipelines = doc.get("pipelines") or []
    matches = [p for p in pipelines if p.get("name") == pipeline]
    if not matches:
        names = ", ".join(str(p.get("name")) for p in pipelines) or "none"
        raise SelectError(f"config {path} has no pipeline {pipeline!r} (pipelines: {names})")
    target = matches[0]
    if task is not None and target.get("task", "detection") != task:
        raise SelectError(
            f"pipeline {pipeline!r} in {path} is a {target.get('task')} pipeline, not {task}"
        )
    target["model"] = model
    if accelerator is not None:
        target["accelerator"] = accelerator
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(tomlkit.dumps(doc))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
