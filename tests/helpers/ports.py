"""Keeping a test server's port while the server is down.

A server that a test stops and starts again on the same port (a broker
outage, a flapping cloud) leaves the port free in between, and ``free_port()``
in a test running at the same time (``.ci/run`` runs the ``long`` tests beside
the rest) could hand it out. A bound socket that does not listen keeps every
``bind()`` to port 0 away from it while clients are still refused, exactly as
by a port nobody holds.
"""

from __future__ import annotations

import socket
import weakref


class PortHold:
    """Holds ``host``:``port`` between :meth:`hold` and :meth:`release` (also released at GC)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._sock: socket.socket | None = None
        self._finalizer: weakref.finalize[[], None] | None = None

    @property
    def held(self) -> bool:
        return self._sock is not None

    def hold(self) -> None:
        """Bind the port without listening; a no-op if held or if someone else has it."""
        if self._sock is not None:
            return
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # SO_REUSEADDR: binds over the TIME_WAIT connections the server just
        # closed; bind() to port 0 elsewhere still never picks the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((self.host, self.port))
        except OSError:  # taken already: the server's restart will say so
            s.close()
            return
        self._sock = s
        self._finalizer = weakref.finalize(self, s.close)

    def release(self) -> None:
        """Let the server bind the port again."""
        if self._finalizer is not None:
            self._finalizer()
        self._sock = self._finalizer = None
