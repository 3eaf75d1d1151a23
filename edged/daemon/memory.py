"""Keep the daemon's resident memory flat: cap the number of glibc malloc arenas.

glibc gives each thread that allocates its own malloc arena, up to eight per
core. The daemon has about twenty threads (capture, pipelines, MQTT, outbox,
offload, housekeeping) that each allocate and free frame-sized buffers; spread
over that many arenas, freed memory sits in holes no other thread reuses, and
the resident size climbs for hours although nothing leaks (Python's own heap,
traced with ``tracemalloc``, stays flat). Measured by the soak test
(``tests/soak``, 5 minutes): about 195 MB/h of growth with glibc's default,
about 35 MB/h flattening out with two arenas.

Two arenas is what ``MALLOC_ARENA_MAX=2`` gives, the usual setting for
long-running multi-threaded Python services. Setting it here, first thing in
the process, makes it hold however the daemon is started (systemd, the demo,
a shell); an operator's own ``MALLOC_ARENA_MAX`` in the environment wins.
On a C library other than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: ``M_ARENA_MAX`` of glibc's ``<malloc.h>``.
_M_ARENA_MAX = -8
#: Arenas the daemon runs with unless ``MALLOC_ARENA_MAX`` says otherwise.
ARENAS = 2


def cap_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Limit glibc to ``arenas`` malloc arenas; True if the limit is now set.

    Call it before the process starts its threads: a thread that has already
    allocated keeps its arena. False (and nothing changed) when the
    environment sets ``MALLOC_ARENA_MAX`` itself, off Linux, or when the C
    library has no ``mallopt``.
    """
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))
