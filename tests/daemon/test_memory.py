"""The malloc arena cap: threads share two glibc arenas unless the environment says otherwise.

Each case runs in a fresh interpreter (arenas are per process and a thread
keeps the arena it first allocated in); the arenas are counted from glibc's
own ``malloc_stats()`` report.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc only",
)

CHILD = textwrap.dedent(
    """
    import ctypes, sys, threading
    from edged.daemon.memory import cap_malloc_arenas

    capped = cap_malloc_arenas() if sys.argv[1] == "cap" else False
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p

    def allocate():
        # A thread's first malloc gives it an arena of its own, up to glibc's limit.
        for _ in range(2000):
            libc.malloc(64)

    threads = [threading.Thread(target=allocate) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(capped, flush=True)
    libc.malloc_stats()  # one "Arena n:" block per arena, on stderr
    """
)


def arenas(mode: str, env: dict[str, str]) -> tuple[bool, int]:
    """(what cap_malloc_arenas returned, arenas in use) in a child process."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    return done.stdout.strip() == "True", len(re.findall(r"^Arena \d+:", done.stderr, re.M))


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}


def test_without_the_cap_busy_threads_get_arenas_of_their_own() -> None:
    """The control: with glibc's default, eight threads make more than two arenas."""
    capped, count = arenas("plain", clean_env())
    assert not capped
    assert count > 2


def test_the_cap_keeps_every_thread_in_two_arenas() -> None:
    """cap_malloc_arenas() before threads start: at most two arenas, however many threads allocate."""
    capped, count = arenas("cap", clean_env())
    assert capped
    assert count <= 2


def test_an_operators_malloc_arena_max_wins() -> None:
    """MALLOC_ARENA_MAX in the environment: the cap steps aside and glibc uses the operator's value."""
    capped, count = arenas("cap", {**clean_env(), "MALLOC_ARENA_MAX": "3"})
    assert not capped
    assert count == 3
