"""Connection limits of ``edged cloud serve``: a cap, a deadline to authenticate, quiet logs.

1,100 unauthenticated slow connections once denied the reference server for a
minute and wrote 190 MB of log: every connection held a descriptor for as
long as its client liked, the process ran out of descriptors, and asyncio
logged a traceback for every failed ``accept``. This module accepts the
connections itself instead of leaving that to ``loop.create_server``:

- at most ``max_connections`` are open at once (kept below the process's
  descriptor limit). When a new one would exceed the cap, the oldest
  connection that has not authenticated yet is closed to make room — an
  attacker's idle connections cannot keep out a device that sends its
  request at once. Only when every open connection has authenticated is the
  new one refused;
- a connection has ``auth_timeout_s`` from ``accept`` to complete its TLS
  handshake and the headers of an authenticated request; then it is closed.
  Headers trickled a byte at a time therefore hold a slot for a bounded time;
- everything is logged once per burst with counts (:class:`BurstLog`), never
  once per connection.

The bearer check (in the server's middleware) calls
:meth:`ConnectionGuard.authenticated` with the connection's peer address.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from edged.log import BurstLog

log = structlog.get_logger(__name__)

#: Descriptors kept free for the model, log files and the listening socket itself.
FD_RESERVE = 64
_SWEEP_S = 0.5
_ACCEPT_PAUSE_S = 0.1


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    peer: Any
    accepted: float
    authenticated: bool = False
    transport: asyncio.Transport | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def close(self) -> None:
        # Shut down rather than close: the transport (or the pending TLS
        # handshake) owns the socket and notices at once, then cleans up itself.
        if self.transport is not None:
            self.transport.abort()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class Limits:
    """The connection limits of one server."""

    max_connections: int
    auth_timeout_s: float


def connection_cap(wanted: int) -> int:
    """``wanted``, lowered to what the descriptor limit allows (raising the soft limit first)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FD_RESERVE))


class ConnectionGuard:
    """Accepts connections on a listening socket and hands them to ``factory`` within limits."""

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext | None,
        limits: Limits,
        bursts: BurstLog,
    ) -> None:
        self._factory = factory
        self._context = context
        self.limits = limits
        self._bursts = bursts
        self._conns: dict[Any, _Conn] = {}  # by peer address: unique while open
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0

    @property
    def open(self) -> int:
        """Connections open now (TLS handshakes included)."""
        return len(self._conns)

    def authenticated(self, peer: Any) -> None:
        """The connection from ``peer`` sent a request with the right token: it may stay."""
        conn = self._conns.get(peer)
        if conn is not None:
            conn.authenticated = True

    async def serve(self, listener: socket.socket) -> None:
        """Accept connections until cancelled."""
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        sweeper = loop.create_task(self._sweep_forever())
        try:
            while True:
                try:
                    sock, peer = await loop.sock_accept(listener)
                except OSError as exc:
                    # EMFILE/ENFILE: descriptors exhausted elsewhere. Pause, do not spin or spam.
                    self._bursts.note(
                        "cloud.accept_failed", error=errno.errorcode.get(exc.errno or 0, str(exc))
                    )
                    await asyncio.sleep(_ACCEPT_PAUSE_S)
                    continue
                self._admit(sock, peer)
        finally:
            sweeper.cancel()
            for conn in list(self._conns.values()):
                conn.close()

    def _admit(self, sock: socket.socket, peer: Any) -> None:
        self._sweep()
        if len(self._conns) >= self.limits.max_connections:
            victim = next((c for c in self._conns.values() if not c.authenticated), None)
            if victim is None:  # every slot holds an authenticated client: refuse the newcomer
                self.refused += 1
                self._bursts.note(
                    "cloud.connection_refused", reason="at the connection cap", open=self.open
                )
                sock.close()
                return
            self.evicted += 1
            self._bursts.note(
                "cloud.connection_evicted",
                reason="at the connection cap: the oldest unauthenticated connection made room",
                cap=self.limits.max_connections,
            )
            self._drop(victim)
        conn = _Conn(sock, peer, time.monotonic())
        self._conns[peer] = conn  # dicts keep insertion order: the first one is the oldest
        conn.task = asyncio.get_running_loop().create_task(self._start(conn))

    async def _start(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.connect_accepted_socket(
                self._factory,
                conn.sock,
                ssl=self._context,
                ssl_handshake_timeout=self.limits.auth_timeout_s if self._context else None,
            )
        except (OSError, ssl.SSLError, TimeoutError):  # a failed handshake: nothing to serve
            self._drop(conn)
            with contextlib.suppress(OSError):
                conn.sock.close()
            return
        conn.transport = transport

    def _drop(self, conn: _Conn) -> None:
        self._conns.pop(conn.peer, None)
        conn.close()

    def _sweep(self) -> None:
        """Forget closed connections; close those that did not authenticate in time."""
        too_old = time.monotonic() - self.limits.auth_timeout_s
        for conn in list(self._conns.values()):
            closed = conn.sock.fileno() < 0 or (
                conn.transport is not None and conn.transport.is_closing()
            )
            if closed:
                self._conns.pop(conn.peer, None)
            elif not conn.authenticated and conn.accepted < too_old:
                self.timed_out += 1
                self._bursts.note(
                    "cloud.connection_timed_out",
                    reason=f"no authenticated request within {self.limits.auth_timeout_s:g} s",
                )
                self._drop(conn)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)
            self._sweep()
            self._bursts.tick()
