"""Every installed model on every accelerator this machine has: one table of nutrition labels.

``python -m bench.accelerators [--models-dir DIR] [--runs N] [--accelerators cpu,cuda,...]``

For each model in the models dir and each accelerator its runtime can use
here (``onnxruntime.get_available_providers()`` for ONNX models; the CPU
kernels, XNNPACK and, where ``libedgetpu.so.1`` loads, the Edge TPU for
LiteRT), this runs the real command, ``edged models bench MODEL
--accelerator NAME``, and prints the stored labels as a Markdown table:
latency p50/p99, peak memory, the golden-set metrics, and the parity verdict
against the CPU label. Accelerators of the runtimes that this machine does
not have are listed below the table as not measured.

On a GPU machine (Jetson or a CUDA/TensorRT host), install NVIDIA's
``onnxruntime-gpu`` wheel in place of ``onnxruntime`` (see
docs/nutrition-labels.md) and run the same command: the CUDA and TensorRT
rows appear by themselves. Without ``--models-dir`` the models are pulled
from ``EDGED_MODEL_MIRROR`` (or the publishers' URLs) into a scratch dir.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from edged.catalog.catalog import load_catalog
from edged.catalog.fetch import pull
from edged.infer import accel
from edged.label.cli import installed
from edged.label.nutrition import NutritionLabel, label_key, load_label
from edged.label.parity import DEFAULT_TOLERANCE

#: The reference models of the catalog, one per task and runtime.
MODELS = ("ssd-mobilenet-v1-coco-int8", "yolox-nano-coco", "movenet-lightning-int8", "yamnet")


def _metrics(label: NutritionLabel) -> str:
    """The golden-set metrics worth a column: overall ones and the person class."""
    if label.accuracy is None:
        return "-"
    shown = [
        f"{k} {v:.2f}"
        for k, v in label.accuracy.metrics.items()
        if v is not None and ("(" not in k or k.endswith("(person)")) and k != "f1"
    ]
    return ", ".join(shown) + f" ({label.accuracy.golden})"


def _parity(label: NutritionLabel) -> str:
    p = label.parity
    if p is None:
        return "reference"
    if p.passed:
        return f"pass (worst drop {max(p.drops.values(), default=0.0):+.2f})"
    return "**fail**: " + ", ".join(f"{m} {-p.drops.get(m, 0.0):+.2f}" for m in p.failed)


def table(labels: list[NutritionLabel]) -> str:
    """The labels as a Markdown table, one row per (model, accelerator)."""
    rows = [
        "| model | runtime | accelerator | p50 ms | p99 ms | peak MB | golden-set metrics | parity |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for lab in labels:
        lat = lab.latency_ms
        rows.append(
            f"| {lab.model} | {lab.runtime} | {lab.accelerator} | "
            f"{lat.p50:.1f} | {lat.p99:.1f} | {lab.peak_mem_mb or 0:.0f} | "
            f"{_metrics(lab)} | {_parity(lab)} |"
            if lat is not None
            else f"| {lab.model} | {lab.runtime} | {lab.accelerator} | - | - | - | - | - |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accelerators", description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=None, help="installed models")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated names")
    parser.add_argument("--accelerators", default="", help="only these (default: all here)")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parity-tolerance", type=float, default=DEFAULT_TOLERANCE)
    args = parser.parse_args(argv)

    models_dir = args.models_dir or Path(tempfile.mkdtemp(prefix="edged-accel-bench-"))
    catalog = load_catalog(models_dir=models_dir)
    names = [n for n in args.models.split(",") if n]
    if args.models_dir is None:
        for name in names:
            pull(catalog.get(name), models_dir)
    entries = [e for e in installed(catalog, models_dir) if e.name in names]
    only = {a for a in args.accelerators.split(",") if a}
    labels: list[NutritionLabel] = []
    missing: set[tuple[str, str]] = set()
    for entry in entries:
        here = accel.available(entry.runtime)
        missing |= {(entry.runtime, a) for a in accel.BY_RUNTIME[entry.runtime] if a not in here}
        # The CPU first: every other accelerator's parity is measured against it.
        for accelerator in sorted(here, key=lambda a: a != "cpu"):
            if only and accelerator not in only and accelerator != "cpu":
                continue
            cmd = [
                sys.executable, "-m", "edged", "models", "bench", entry.name,
                "--accelerator", accelerator, "--models-dir", str(models_dir),
                "--runs", str(args.runs), "--warmup", str(args.warmup),
                "--threads", str(args.threads),
                "--parity-tolerance", str(args.parity_tolerance),
            ]  # fmt: skip
            print(f"bench {label_key(entry.name, accelerator)} ...", file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            label = load_label(models_dir, entry.name, entry.file.sha256, accelerator)
            if label is not None:
                labels.append(label)
    print(table(labels))
    if missing:
        print()
        print(
            "Not measured (not available on this machine): "
            + ", ".join(f"{a} ({runtime})" for runtime, a in sorted(missing))
            + "."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
