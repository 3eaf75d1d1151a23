"""``edged models report``: one self-contained HTML page (plus the PNGs) from the stored labels.

Plots, drawn with matplotlib's Agg backend (no display, no GUI toolkit):

- accuracy vs latency, one panel per task, with the selection criterion
  (``--require``) drawn as lines and the passing corner shaded,
- energy per inference (hatched bars are estimates, not measurements),
- model size, coloured by quantization,
- with ``--offload-stats FILE``: bytes, requests and (when given) energy of
  the offload policy vs sending every frame to the cloud.

The page embeds every plot as a base64 PNG, so it can be mailed or attached
to a ticket as one file; the PNGs are written beside it as well.

Offload stats are a JSON object written by the offload benchmark::

    {"frames": 301,
     "policy":      {"requests": 12,  "bytes": 410000,   "energy_j": 1.9},
     "every_frame": {"requests": 301, "bytes": 10300000, "energy_j": 48.0}}

``energy_j`` is optional on both sides.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged.errors import EdgedError
from edged.label.nutrition import NutritionLabel
from edged.label.select import Requirement

#: Accuracy metric drawn per task when no requirement names one.
DEFAULT_ACCURACY = {"detection": "recall", "pose": "pck", "audio": "top1"}
LATENCY_METRICS = ("p50_ms", "p95_ms", "p99_ms", "mean_ms")


class ReportError(EdgedError):
    """The report could not be made."""


@dataclass(frozen=True, slots=True)
class Plot:
    """One rendered figure."""

    key: str
    title: str
    png: bytes
    caption: str


def _pyplot() -> Any:
    try:
        import matplotlib  # noqa: PLC0415  (optional extra)
    except ImportError:
        raise ReportError("the report needs matplotlib: pip install 'edged[report]'") from None
    matplotlib.use("Agg")  # before pyplot: never look for a display on a headless device
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    return buf.getvalue()


def _requirement(requirements: Sequence[Requirement], names: Sequence[str]) -> Requirement | None:
    return next((r for r in requirements if r.metric in names), None)


def accuracy_plot(
    labels: Sequence[NutritionLabel], requirements: Sequence[Requirement], criterion_task: str
) -> Plot:
    """Accuracy against latency, one panel per task; the criterion is drawn on its task's panel."""
    plt = _pyplot()
    tasks = sorted({lab.task for lab in labels})
    # At most 12 in x 100 dpi = 1200 px wide: the page's width, so nothing is scaled down.
    width = min(12.0, 4.2 * len(tasks))
    fig, axes = plt.subplots(1, len(tasks), figsize=(width, 4.0), squeeze=False)
    notes = []
    for ax, task in zip(axes[0], tasks, strict=True):
        group = [lab for lab in labels if lab.task == task]
        names = {k for lab in group for k in lab.metrics()}
        reqs = requirements if task == criterion_task else ()
        lat_req = _requirement(reqs, LATENCY_METRICS)
        acc_req = _requirement(reqs, sorted(names - set(LATENCY_METRICS)))
        x_metric = lat_req.metric if lat_req else "p95_ms"
        y_metric = acc_req.metric if acc_req else DEFAULT_ACCURACY[task]
        for i, lab in enumerate(group):
            m = lab.metrics()
            x, y = m.get(x_metric), m.get(y_metric)
            if x is None or y is None:
                continue
            ax.scatter([x], [y], s=40 + 20 * lab.size_mb, alpha=0.8)
            # Models often tie on accuracy: stagger the names so they stay readable.
            ax.annotate(
                lab.model, (x, y), textcoords="offset points", xytext=(6, 6 - 11 * i), fontsize=7
            )
        if acc_req is not None:
            ax.axhline(acc_req.value, color="tab:red", linestyle="--", label=str(acc_req))
        if lat_req is not None:
            ax.axvline(lat_req.value, color="tab:purple", linestyle="--", label=str(lat_req))
        if acc_req is not None and lat_req is not None:
            ax.axvspan(0, lat_req.value, ymin=0, ymax=1, color="tab:green", alpha=0.06)
        if acc_req is not None or lat_req is not None:
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlim(left=0)
        ax.set_ylim(-0.05, 1.1)
        ax.set_xlabel(f"{x_metric} (ms, lower is better)", fontsize=9)
        golden = group[0].accuracy.golden if group[0].accuracy else "?"
        ax.set_ylabel(f"{y_metric} on {golden}", fontsize=9)
        ax.set_title(task)
        ax.grid(alpha=0.3)
        notes.append(f"{task}: {y_metric}")
    fig.tight_layout()
    caption = (
        "Accuracy on each task's golden set against latency on this device; marker area grows "
        "with model size. Dashed lines: the selection criterion. " + "; ".join(notes)
    )
    return Plot("accuracy_latency", "Accuracy vs latency", _png(fig), caption)


def energy_plot(labels: Sequence[NutritionLabel], requirements: Sequence[Requirement]) -> Plot:
    """Energy per inference per model; estimates hatched."""
    plt = _pyplot()
    measured = [lab for lab in labels if lab.energy is not None]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(measured) + 1.6))
    for i, lab in enumerate(measured):
        assert lab.energy is not None
        ax.barh(
            i,
            lab.energy.mj_per_inference,
            color="tab:orange",
            hatch="//" if lab.energy.estimated else None,
            edgecolor="black",
        )
        tag = "estimated" if lab.energy.estimated else lab.energy.method
        ax.text(lab.energy.mj_per_inference, i, f" {lab.energy.mj_per_inference:.1f} mJ ({tag})",
                va="center", fontsize=8)  # fmt: skip
    req = _requirement(requirements, ("energy_mj",))
    if req is not None:
        ax.axvline(req.value, color="tab:red", linestyle="--", label=str(req))
        ax.legend(fontsize=8)
    ax.set_yticks(range(len(measured)), [lab.model for lab in measured], fontsize=8)
    ax.set_xlabel("energy per inference (mJ)")
    ax.margins(x=0.35)
    fig.tight_layout()
    estimated = sorted(
        {lab.energy.profile for lab in measured if lab.energy and lab.energy.estimated}
    )
    caption = "Energy per inference. Hatched: estimated from CPU time x device profile " + (
        f"({', '.join(estimated)}), not measured." if estimated else "(none here)."
    )
    return Plot("energy", "Energy per inference", _png(fig), caption)


def size_plot(labels: Sequence[NutritionLabel], requirements: Sequence[Requirement]) -> Plot:
    """File size per model, coloured by the weights' dtype."""
    plt = _pyplot()
    colours = {"int8": "tab:green", "uint8": "tab:olive", "float16": "tab:cyan"}
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(labels) + 1.6))
    for i, lab in enumerate(labels):
        ax.barh(i, lab.size_mb, color=colours.get(lab.quantization, "tab:blue"))
        ax.text(
            lab.size_mb, i, f" {lab.size_mb:.2f} MB, {lab.quantization}", va="center", fontsize=8
        )
    req = _requirement(requirements, ("size_mb",))
    if req is not None:
        ax.axvline(req.value, color="tab:red", linestyle="--", label=str(req))
        ax.legend(fontsize=8)
    ax.set_yticks(range(len(labels)), [lab.model for lab in labels], fontsize=8)
    ax.set_xlabel("model file size (MB)")
    ax.margins(x=0.35)
    fig.tight_layout()
    return Plot(
        "size", "Model size", _png(fig), "File size; colour = weight dtype read from the file."
    )


def read_offload_stats(path: Path) -> dict[str, Any]:
    """Load and check an offload stats file (see the module docstring for its layout)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read offload stats {path}: {exc}") from None
    for side in ("policy", "every_frame"):
        part = data.get(side) if isinstance(data, dict) else None
        if not isinstance(part, dict) or not {"requests", "bytes"} <= part.keys():
            raise ReportError(
                f"offload stats {path}: '{side}' must be an object with 'requests' and 'bytes'"
            )
    return dict(data)


def offload_plot(stats: dict[str, Any]) -> Plot:
    """Bytes, requests and energy of the offload policy vs sending every frame."""
    plt = _pyplot()
    policy, every = stats["policy"], stats["every_frame"]
    panels = [("bytes", "MB sent", 1e-6), ("requests", "requests", 1.0)]
    if "energy_j" in policy and "energy_j" in every:
        panels.append(("energy_j", "energy (J)", 1.0))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), squeeze=False)
    saved = []
    for ax, (key, unit, scale) in zip(axes[0], panels, strict=True):
        values = [every[key] * scale, policy[key] * scale]
        ax.bar(["every frame", "policy"], values, color=["tab:gray", "tab:green"])
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=8)
        ax.set_ylabel(unit)
        if every[key]:
            pct = 100 * (1 - policy[key] / every[key])
            ax.set_title(f"{pct:.0f}% saved", fontsize=10)
            saved.append(f"{key}: {pct:.0f}% saved")
    fig.tight_layout()
    frames = stats.get("frames")
    caption = (f"Offload over {frames} frames: " if frames else "Offload: ") + "; ".join(saved)
    return Plot("offload", "Offload vs every frame", _png(fig), caption)


_CSS = """
body{font-family:system-ui,sans-serif;margin:20px;max-width:1200px;color:#222;background:#fff}
table{border-collapse:collapse;font-size:13px;margin:12px 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
figure.plot{margin:18px 0}
figure.plot img{display:block;border:1px solid #ddd;max-width:100%;height:auto}
figcaption{font-size:13px;color:#555;margin-top:4px}
.est{color:#a60}
"""


def _table(labels: Sequence[NutritionLabel]) -> str:
    head = [
        "model", "task", "size MB", "quant", "runtime", "threads", "p50 ms", "p95 ms",
        "p99 ms", "inf/s", "peak MB", "mJ/inf", "accuracy",
    ]  # fmt: skip
    rows = []
    for lab in labels:
        lat, e, acc = lab.latency_ms, lab.energy, lab.accuracy
        energy = "-"
        if e is not None:
            energy = f"{e.mj_per_inference:.1f}" + (
                ' <span class="est">est.</span>' if e.estimated else ""
            )
        accuracy = "-"
        if acc is not None:
            shown = {k: v for k, v in acc.metrics.items() if v is not None and "(" not in k}
            accuracy = html.escape(
                f"{acc.golden}: " + ", ".join(f"{k} {v:.2f}" for k, v in shown.items())
            )
        cells = [
            html.escape(lab.model), lab.task, f"{lab.size_mb:.2f}", html.escape(lab.quantization),
            html.escape(lab.runtime), str(lab.threads or "-"),
            f"{lat.p50:.1f}" if lat else "-", f"{lat.p95:.1f}" if lat else "-",
            f"{lat.p99:.1f}" if lat else "-",
            f"{lab.throughput_ips:.1f}" if lab.throughput_ips else "-",
            f"{lab.peak_mem_mb:.0f}" if lab.peak_mem_mb is not None else "-", energy, accuracy,
        ]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
    return f"<table>{header}{''.join(rows)}</table>"


def render(
    labels: Sequence[NutritionLabel],
    out_dir: Path,
    *,
    requirements: Sequence[Requirement] = (),
    criterion_task: str = "detection",
    offload: dict[str, Any] | None = None,
) -> Path:
    """Write ``report.html`` and one PNG per plot into ``out_dir``; return the HTML path."""
    if not labels:
        raise ReportError("no labels to report: run `edged models bench --all` first")
    ordered = sorted(labels, key=lambda lab: (lab.task, lab.cost() or float("inf"), lab.model))
    plots = [
        accuracy_plot([lab for lab in ordered if lab.measured], requirements, criterion_task),
        energy_plot(ordered, requirements),
        size_plot(ordered, requirements),
    ]
    if offload is not None:
        plots.append(offload_plot(offload))
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for plot in plots:
        (out_dir / f"{plot.key}.png").write_bytes(plot.png)
        data = base64.b64encode(plot.png).decode()
        figures.append(
            f'<figure class="plot" id="plot-{plot.key}"><h2>{html.escape(plot.title)}</h2>'
            f'<img alt="{html.escape(plot.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(plot.caption)}</figcaption></figure>"
        )
    device = next((lab.device for lab in ordered if lab.device is not None), None)
    where = (
        html.escape(f"{device.cpu}, {device.cores} CPUs, {device.arch}, profile {device.profile}")
        if device
        else "unknown device"
    )
    criterion = html.escape(", ".join(str(r) for r in requirements)) or "none given"
    if requirements:
        criterion += f" ({html.escape(criterion_task)})"
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>edged model report</title>"
        f"<style>{_CSS}</style></head><body><h1>Models on this device</h1>"
        f"<p>Measured on {where}. Selection criterion: {criterion}.</p>"
        f"{_table(ordered)}{''.join(figures)}"
        "<p>Latency: per input (preprocess + inference + decode) after warm-up, cycling the "
        "golden set's media. Energy marked <em>est.</em> is CPU time x a device power profile, "
        "not a measurement.</p></body></html>\n"
    )
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
