"""One absolute deadline over a whole HTTP exchange: connect, TLS, request, headers, body.

urllib3's timeouts are per operation: a connect timeout, then a timeout for
*each* read. A server that trickles its answer — one byte of the status line
or the headers every second — never lets a single read time out, and held a
request for 55 s against a 15 s frame deadline. Checking the clock between
reads does not help either: the wait is inside one ``recv`` (or inside
http.client's header parser, which urllib3 does not let us step through).

So the deadline is enforced from outside the blocked call: every socket the
exchange uses is registered with a :class:`Deadline`, and a timer shuts the
sockets down when the deadline passes. ``shutdown(SHUT_RDWR)`` wakes a
blocked ``recv``/``send``/TLS handshake at once on Linux (it returns EOF or
an error), whatever urllib3 or http.client are in the middle of. The timer
holds a duplicate of each descriptor, so the number it shuts down can never
be a descriptor that was closed and reused meanwhile.

Registration goes through a thread-local: the link probe and the offload
worker share one connection pool, and each thread's exchange has its own
deadline.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPSConnectionPool

_current = threading.local()


class Deadline:
    """Shuts down every registered socket when ``at`` (time.monotonic) passes."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.fired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._fds: set[int] = set()
        self._timer = threading.Timer(max(0.0, at - time.monotonic()), self._fire)
        self._timer.name = "offload-deadline"
        self._timer.daemon = True

    def left(self) -> float:
        """Seconds until the deadline (negative once past)."""
        return self.at - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        """Register ``sock``: it is shut down when the deadline passes (at once if it has)."""
        fd = sock.fileno()
        if fd < 0 or fd in self._fds:  # closed, or seen before its TLS wrapping
            return
        dup = socket.socket(fileno=socket.dup(fd))
        with self._lock:
            self._fds.add(fd)
            self._socks.append(dup)
            if self.fired:
                _shutdown(dup)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for s in self._socks:
                _shutdown(s)

    def __enter__(self) -> Deadline:
        self._timer.start()
        _current.deadline = self
        return self

    def __exit__(self, *exc: object) -> None:
        _current.deadline = None
        self._timer.cancel()
        with self._lock:
            for s in self._socks:
                s.close()  # only our duplicate: the connection itself stays with urllib3
            self._socks.clear()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the peer may have closed it already
        sock.shutdown(socket.SHUT_RDWR)


def _watch(sock: socket.socket | None) -> None:
    deadline: Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.watch(sock)


class DeadlineConnection(HTTPSConnection):
    """An HTTPS connection whose sockets obey the calling thread's :class:`Deadline`."""

    def _new_conn(self) -> socket.socket:
        # Registered before the TLS handshake, which a trickling server can stretch too.
        sock = super()._new_conn()
        _watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        # A kept-alive connection from the pool was registered by an earlier exchange.
        _watch(self.sock)
        super().request(*args, **kwargs)


class DeadlinePool(HTTPSConnectionPool):
    """urllib3's HTTPS pool making :class:`DeadlineConnection` connections."""

    ConnectionCls = DeadlineConnection
