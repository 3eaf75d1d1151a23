"""When the MQTT session tries the broker again: backoff, a cheap probe, jitter.

A full connect (TCP, TLS handshake, CONNECT/CONNACK, then re-sends) backs off
exponentially from ``reconnect_min_s`` to ``reconnect_max_s``, so that a
broker that accepts connections but keeps ending sessions (refusing the
login, a failing TLS handshake, a takeover storm) is not hammered. But a
broker that is simply *not there* costs nothing to ask: while the last
attempt failed before TCP was even established, a bare TCP connect to its
port (no TLS, no MQTT) is tried every :data:`PROBE_S` seconds, and the
first one that is accepted cuts the wait short. Delivery therefore resumes
within about a second of the broker's return after an outage of any length,
where a capped backoff alone could wait up to the whole cap (after a 45 s
outage, 16.5 s with the 30 s cap).

Every wait is jittered (±20 %), so that devices cut off by the same outage
do not all come back in the same instant.
"""

from __future__ import annotations

import random
import socket
import ssl
import threading
import time
from enum import Enum
from typing import Final

#: Interval of the TCP probe while the broker is unreachable, seconds.
PROBE_S: Final = 0.5
#: Spread of every wait: ``delay * uniform(1 - JITTER, 1 + JITTER)``.
JITTER: Final = 0.2
#: A session that ended sooner than this after its CONNACK was no session to
#: speak of: the next full connect backs off instead of starting over.
SHORT_SESSION_S: Final = 5.0


class Regime(Enum):
    """Why the last attempt or session ended, which decides how to wait."""

    #: A session ended after running a while: try again after the first delay.
    LOST = "lost"
    #: TCP was not established (refused, unreachable, DNS): probe cheaply.
    UNREACHABLE = "unreachable"
    #: TCP was established but the connect failed (TLS, timeout) or the
    #: session ended at once: back off; a probe would learn nothing.
    FAILING = "failing"
    #: The broker answered and refused (credentials, client id): back off slowly.
    REFUSED = "refused"


#: Connect errors raised before a TCP connection existed.
_TCP_ERRORS: Final = (ConnectionRefusedError, socket.gaierror, TimeoutError)


def tcp_failed(exc: BaseException | None) -> bool:
    """True if ``exc`` (from a failed connect) means TCP itself was not established."""
    if exc is None or isinstance(exc, _TCP_ERRORS):
        return True
    # ENETUNREACH, EHOSTUNREACH and friends come as plain OSError; TLS errors
    # (ssl.SSLError is an OSError too) and resets mean a peer was there.
    return isinstance(exc, OSError) and not isinstance(
        exc, ssl.SSLError | ConnectionResetError | ConnectionAbortedError
    )


class Backoff:
    """The wait before each connect attempt of one MQTT session (paho's network thread).

    ``refused_s`` is the first delay after a refusal. ``probe_s`` is the TCP
    probe interval while the broker is unreachable (never above
    :data:`PROBE_S`, never above ``min_s``). ``rng`` makes the jitter
    reproducible in tests.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        min_s: float,
        max_s: float,
        refused_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.min_s, self.max_s = min_s, max(max_s, min_s)
        self.refused_s = min(max(refused_s, min_s), self.max_s)
        self.probe_s = min(PROBE_S, min_s)
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not a secret
        self._lock = threading.Lock()
        self._regime = Regime.LOST
        self._delay: float | None = None  # the last full-connect delay of this run of failures
        self._probed = False  # a probe was accepted since the last attempt
        self.probes = 0  # TCP probes made (for tests and the log)

    @property
    def regime(self) -> Regime:
        """How the next wait is chosen."""
        with self._lock:
            return self._regime

    def connect_failed(self, exc: BaseException | None) -> None:
        """A connect attempt raised ``exc`` before any CONNACK."""
        with self._lock:
            # A TCP-level failure right after an accepted probe means the probe
            # misleads (e.g. a port that accepts and hangs): stop trusting it.
            unreachable = tcp_failed(exc) and not self._probed
            self._regime = Regime.UNREACHABLE if unreachable else Regime.FAILING
            self._probed = False

    def refused(self) -> None:
        """The broker answered the CONNECT with a failure reason code."""
        with self._lock:
            if self._regime is not Regime.REFUSED:
                self._delay = None  # the slow series starts at refused_s
            self._regime = Regime.REFUSED

    def session_ended(self, lasted_s: float) -> None:
        """An established session ended (not by us) after ``lasted_s`` seconds."""
        with self._lock:
            if lasted_s >= SHORT_SESSION_S:
                self._regime, self._delay = Regime.LOST, None
            else:
                self._regime = Regime.FAILING

    def delay_s(self) -> float:
        """The next full-connect delay (before jitter), advancing the series."""
        with self._lock:
            first = self.refused_s if self._regime is Regime.REFUSED else self.min_s
            self._delay = first if self._delay is None else min(self._delay * 2, self.max_s)
            return self._delay

    def jitter(self, seconds: float) -> float:
        """``seconds`` spread by ±:data:`JITTER`."""
        return seconds * self._rng.uniform(1.0 - JITTER, 1.0 + JITTER)

    def wait(self, stop: threading.Event) -> None:
        """Sleep until the next connect attempt is due, or ``stop`` is set.

        Unreachable broker: probe every ``probe_s`` and return as soon as a
        probe is accepted. Otherwise: sleep the jittered backoff delay.
        """
        deadline = time.monotonic() + self.jitter(self.delay_s())
        probing = self.regime is Regime.UNREACHABLE
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            step = min(left, self.jitter(self.probe_s)) if probing else left
            if stop.wait(step) or (probing and self.probe()):
                return

    def probe(self) -> bool:
        """True if the broker's port accepts a TCP connection now (closed at once, no TLS)."""
        self.probes += 1
        try:
            with socket.create_connection((self.host, self.port), timeout=max(self.probe_s, 0.2)):
                pass
        except OSError:
            return False
        with self._lock:
            self._probed = True
        return True
