"""CPU priority of the daemon's threads: inference first, bookkeeping in the gaps.

On a small board the inference runtimes use every core (``threads`` = cores
is the common setting), and any other thread that runs meanwhile delays one
of their workers, which delays the whole inference: XNNPACK and ONNX Runtime
split each operator evenly and wait for the slowest share. The outbox
writer, the forwarder, MQTT's network loop, housekeeping, commands and the
offload worker have ms-scale deadlines and little work, so they run at a
lower priority (a higher nice value, per thread on Linux): they still get
the CPU whenever inference waits for its next frame, and they are never
starved (CFS gives a nice-5 thread about a third of a nice-0 thread's share
under contention), but they no longer stretch inference. Capture threads
keep the normal priority: a camera's frames are not to be dropped for
bookkeeping.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Final

#: Nice increment of background threads over the process's own priority.
BACKGROUND_NICE: Final = 5


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def fills_every_core(threads: int) -> bool:
    """True when ``threads`` inference threads leave no core for other work."""
    return threads >= usable_cores()


def lower_this_thread(increment: int = BACKGROUND_NICE) -> bool:
    """Raise the calling thread's nice value by ``increment``; False where not possible.

    Linux applies ``setpriority(PRIO_PROCESS, tid)`` to a single thread. Only
    raising is ever attempted (no privilege needed), so this cannot fail for
    lack of rights on a sandboxed service; elsewhere it is a no-op.
    """
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + increment))
    except (OSError, AttributeError):
        return False
    return True


def background(target: Callable[[], None]) -> Callable[[], None]:
    """``target`` run at background priority: pass it as a ``threading.Thread`` target."""

    def run() -> None:
        lower_this_thread()
        target()

    run.__name__ = getattr(target, "__name__", "background")
    return run
