"""A candidate's numbers on the device's golden set, with the label machinery of ``models bench``.

The task is the pipeline's own task object on the candidate model (same
preprocessing and decoder as it would run live), scored by
:class:`edged.label.evaluate.Evaluation`; latency is timed per input as the
bench times it, over a couple of passes of the (small) golden set, so a
rollout takes seconds. The metric names are those of a nutrition label
(``recall(person)``, ``p95_ms``, ``size_mb``, …), so a pipeline's
``require`` reads exactly like ``edged models select --require``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edged.label.evaluate import Evaluation, Prepared, prepare
from edged.label.golden import default_golden, load_golden, media_dir

#: Timed passes over the golden set (after one untimed accuracy pass, which warms up).
TIMED_PASSES = 2

_prepared: dict[str, Prepared] = {}
_prepared_lock = threading.Lock()


def golden_inputs(task: str) -> Prepared:
    """The shipped golden set of ``task``, decoded once per process (GoldenError if no media)."""
    with _prepared_lock:
        if task not in _prepared:
            _prepared[task] = prepare(load_golden(default_golden(task)), media_dir())
        return _prepared[task]


def evaluate(task_kind: str, task: Any, model_path: Path) -> dict[str, float | None]:
    """Golden-set accuracy, latency p50/p95/p99 (ms) and size (MB) of a built task."""
    evaluation = Evaluation(golden_inputs(task_kind), task)
    metrics: dict[str, float | None] = dict(evaluation.accuracy().metrics)
    distinct, run = evaluation.workload()
    latencies = []
    for i in range(TIMED_PASSES * distinct):
        start = time.perf_counter()
        run(i)
        latencies.append((time.perf_counter() - start) * 1e3)
    lat = np.asarray(latencies)
    metrics |= {
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p95_ms": round(float(np.percentile(lat, 95)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3),
        "mean_ms": round(float(lat.mean()), 3),
        "size_mb": model_path.stat().st_size / 1e6,
    }
    return metrics
