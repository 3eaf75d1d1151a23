"""What a process holds, read from ``/proc/<pid>``, and robust trends over samples.

For leak and soak tests: :func:`sample` reads a process's resident memory,
open file descriptors and threads without touching the process;
:func:`theil_sen_slope` fits a trend that a few outliers (a backlog drain, a
garbage collection) cannot drag.
"""

from __future__ import annotations

import itertools
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One look at a process, ``t`` seconds into the observation."""

    t: float
    rss_mb: float  # VmRSS, MiB
    fds: int  # entries of /proc/<pid>/fd
    threads: int  # entries of /proc/<pid>/task


def sample(pid: int, t: float) -> ProcSample:
    """Read ``pid``'s VmRSS, open fds and threads; raises OSError once the process is gone."""
    proc = Path(f"/proc/{pid}")
    rss_kb = 0
    for line in (proc / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])  # "VmRSS:   123456 kB"
            break
    return ProcSample(
        t=t,
        rss_mb=rss_kb / 1024,
        fds=len(os.listdir(proc / "fd")),
        threads=len(os.listdir(proc / "task")),
    )


def theil_sen_slope(points: Sequence[tuple[float, float]]) -> float:
    """The median of the slopes between every pair of points (Theil-Sen), in y per x.

    Unlike a least-squares fit it ignores up to ~29 % of wild points, so a few
    transient peaks do not read as a trend; a real leak moves most pairs and
    therefore the median. Quadratic in the number of points, which is fine for
    the few hundred samples of a soak run.
    """
    slopes = [
        (y2 - y1) / (x2 - x1)
        for (x1, y1), (x2, y2) in itertools.combinations(points, 2)
        if x2 != x1
    ]
    if not slopes:
        raise ValueError("a slope needs at least two points at different x")
    return statistics.median(slopes)
