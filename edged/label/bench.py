"""``edged models bench``: measure one model's nutrition label, each model in its own process.

Why a subprocess per model: peak memory is the growth of the process's
resident set from loading and running the model. In one process, the
allocator keeps freed arenas, runtimes keep thread pools and kernels cached,
and the second model would be measured on top of the first. A fresh
interpreter per model gives every label the same starting point, and a
crashing runtime takes down only its own measurement.

The measurement, in order:

1. decode the golden set's media (before the memory baseline),
2. reset the kernel's peak-RSS mark (``/proc/self/clear_refs``) and read RSS,
3. load + warm up the model and build the pipeline's task for it,
4. run the golden set once for accuracy,
5. ``warmup`` more calls, then ``runs`` timed calls cycling through the
   golden inputs, with the energy meter around the timed loop,
6. peak RSS minus the baseline = peak memory.

Latency is per input through preprocess + inference + decode, as a pipeline
pays it; ``infer_p50`` is the model alone. The model is loaded exactly as a
pipeline loads it (:func:`edged.infer.registry.load_model`), on the requested
accelerator (``auto`` resolves as in the daemon), and the label names the
accelerator it ran on.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edged.catalog.catalog import load_catalog
from edged.catalog.resolve import resolve_entry
from edged.errors import EX_FAILURE, EX_OK, EdgedError
from edged.infer.accel import cache_dir
from edged.infer.registry import load_model
from edged.label.energy import EnergyMeter, cpu_model, profile
from edged.label.evaluate import Evaluation, prepare
from edged.label.fileinfo import read_quantization
from edged.label.golden import default_golden, load_golden
from edged.label.nutrition import Device, Energy, Latency, NutritionLabel, iso_now
from edged.sched import usable_cores
from edged.tasks import TASKS

#: A model's bench should take seconds; this bounds a runtime that hangs.
CHILD_TIMEOUT_S = 900.0


class BenchError(EdgedError):
    """A model could not be measured."""


@dataclass(frozen=True, slots=True)
class BenchSpec:
    """Everything a child process needs to measure one model (sent as JSON)."""

    model: str
    models_dir: str
    media: str
    golden: str = ""  # name or path; "" = the shipped set of the model's task
    catalog: str | None = None
    threads: int = 2
    runs: int = 50
    warmup: int = 5
    device_profile: str = "auto"
    power_sensor: str | None = None
    accelerator: str = "auto"  # as [[pipelines]] accelerator; the label names the resolved one


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise BenchError(f"/proc/self/status has no {key}")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _build_task(resolved: Any, model: Any) -> Any:
    module, _, attr = TASKS[resolved.task].partition(":")
    return getattr(importlib.import_module(module), attr)(resolved, model)


def measure(spec: BenchSpec) -> NutritionLabel:
    """Measure ``spec.model`` in this process (the child side of :func:`bench`)."""
    models_dir = Path(spec.models_dir)
    catalog = load_catalog(Path(spec.catalog) if spec.catalog else None, models_dir=models_dir)
    entry = catalog.get(spec.model)
    resolved = resolve_entry(catalog, entry, models_dir)
    golden = load_golden(spec.golden or default_golden(entry.task))
    if golden.task != entry.task:
        raise BenchError(
            f"golden set {golden.name!r} is for {golden.task}, but {entry.name!r} is a "
            f"{entry.task} model"
        )
    prepared = prepare(golden, Path(spec.media))
    device = profile(spec.device_profile)
    meter = EnergyMeter(device, sensor=Path(spec.power_sensor) if spec.power_sensor else None)

    reset = _reset_peak_rss()
    rss0_kb = _status_kb("VmRSS")
    maxrss0_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = load_model(
        resolved.path,
        runtime=resolved.runtime,
        threads=spec.threads,
        accelerator=spec.accelerator,
        cache_dir=cache_dir(models_dir),
    )
    task = _build_task(resolved, model)
    evaluation = Evaluation(prepared, task)
    accuracy = evaluation.accuracy()

    distinct, run = evaluation.workload()
    for i in range(spec.warmup):
        run(i)
    latencies, infers = [], []
    meter.start()
    t0 = time.perf_counter()
    for i in range(spec.runs):
        start = time.perf_counter()
        infers.append(run(i))
        latencies.append((time.perf_counter() - start) * 1e3)
    wall = time.perf_counter() - t0
    energy = meter.stop(spec.runs)
    if reset:
        peak_kb = _status_kb("VmHWM") - rss0_kb
    else:  # no clear_refs: the lifetime peak minus the peak before loading (a lower bound)
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss0_kb
    model.close()

    q = read_quantization(resolved.path)
    lat = np.asarray(latencies)
    return NutritionLabel(
        model=resolved.name,
        task=resolved.task,
        measured=True,
        file=resolved.path.name,
        sha256=resolved.sha256,
        size_bytes=resolved.path.stat().st_size,
        quantization=q.weights,
        quantization_detail=q.summary,
        runtime=model.runtime,
        accelerator=model.accelerator,
        threads=spec.threads,
        device=Device(
            cpu=cpu_model(), cores=usable_cores(), arch=platform.machine(), profile=device.name
        ),
        latency_ms=Latency(
            p50=round(float(np.percentile(lat, 50)), 3),
            p95=round(float(np.percentile(lat, 95)), 3),
            p99=round(float(np.percentile(lat, 99)), 3),
            mean=round(float(lat.mean()), 3),
            infer_p50=round(float(np.median(infers)), 3),
        ),
        throughput_ips=round(spec.runs / wall, 2),
        peak_mem_mb=round(max(0, peak_kb) / 1024, 1),
        energy=Energy(
            mj_per_inference=round(energy.mj_per_inference, 3),
            method=energy.method,
            estimated=energy.estimated,
            profile=device.name,
            detail=energy.detail,
        ),
        accuracy=accuracy.model_copy(
            update={"details": [*accuracy.details, {"distinct_inputs": distinct}]}
        ),
        runs=spec.runs,
        warmup=spec.warmup,
        timestamp=iso_now(),
    )


def bench(spec: BenchSpec, *, timeout_s: float = CHILD_TIMEOUT_S) -> NutritionLabel:
    """Measure ``spec.model`` in a fresh Python process and return its label."""
    cmd = [sys.executable, "-m", "edged.label.bench", json.dumps(asdict(spec))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{spec.model}: bench did not finish in {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"{spec.model}: {tail}")
    try:
        return NutritionLabel.model_validate_json(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise BenchError(f"{spec.model}: the bench process printed no label ({exc})") from None


def _child(argv: list[str]) -> int:
    """Child entry point: one JSON spec in argv, the label as one JSON line on stdout."""
    from edged.log import configure_logging  # noqa: PLC0415

    configure_logging("warning", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="python -m edged.label.bench")
    parser.add_argument("spec", help="BenchSpec as JSON")
    args = parser.parse_args(argv)
    try:
        label = measure(BenchSpec(**json.loads(args.spec)))
    except EdgedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_FAILURE
    print(label.model_dump_json())
    return EX_OK


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
