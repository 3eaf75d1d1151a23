"""The link monitor: is the cloud endpoint reachable, fast enough, and not metered?

Two signals feed it. A thread probes ``GET <url>/health`` every
``probe_interval_s`` (reachability, round-trip time, and — since the probe
carries the token — authorization). Each probe has one absolute deadline,
``connect_timeout_s + read_timeout_s`` over the whole exchange: a probe that
misses it marks the link ``down`` (a slow one that makes it but is over
``max_rtt_ms``, ``degraded``), so a server trickling its ``/health`` answer
cannot freeze the probe — or the link's last good state — for the whole run. Real requests report back too: a frame
that finally failed marks the link ``down`` at once and holds it there for
a while that doubles with every further failure (one probe interval, then
two, four… capped at ten minutes), so a server that answers its health
check but fails every frame costs a handful of requests, not a storm.

Pipeline threads read :attr:`LinkMonitor.current`, an immutable snapshot
replaced as a whole, so the per-frame check takes no lock.

Logging is once per burst: ``offload_link_down`` when the link goes down for
a new kind of reason, ``offload_link`` when it is back — where a burst of
failed frames ends only with a frame that got its answer, not with a probe
that passed in between.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

import structlog

from edged.config.settings import OffloadSettings
from edged.offload.client import CloudClient, CloudError
from edged.publish.payloads import LinkState
from edged.sched import background

log = structlog.get_logger(__name__)

MAX_HOLD_S = 600.0
_TICK_S = 1.0  # how often the metered flag is re-read

Status = Literal["up", "degraded", "down"]


@dataclass(frozen=True, slots=True)
class Link:
    """One snapshot of the link."""

    status: Status
    rtt_ms: float | None
    reason: str | None
    metered: bool

    def refusal(self) -> str | None:
        """The decision reason that keeps a frame on the device, or None when it may go."""
        if self.status == "down":
            return "link_down"
        if self.status == "degraded":
            return "rtt_high"
        if self.metered:
            return "metered"
        return None

    def state(self) -> LinkState:
        """As published in ``state``."""
        reason = self.reason
        if self.metered and self.status != "down":
            reason = "metered: nothing is sent" + (f"; {reason}" if reason else "")
        return LinkState(status=self.status, rtt_ms=self.rtt_ms, reason=reason)


class LinkMonitor:
    """Probes the endpoint in a thread and keeps :attr:`current` up to date."""

    def __init__(self, client: CloudClient, settings: OffloadSettings) -> None:
        self._client = client
        self._settings = settings
        self.current = Link("down", None, "not probed yet", self._read_metered())
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failures = 0
        self._hold_until = 0.0
        self._next_probe = 0.0
        self._logged: tuple[str, str] = ("", "")
        self.probes = 0
        self._thread = threading.Thread(
            target=background(self._loop), name="offload-link", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    # -- passive signals from real requests --------------------------------
    def report_success(self) -> None:
        """A frame got its answer: failures so far no longer lengthen the hold."""
        with self._lock:
            if self._failures:
                self._failures = 0
                self._set(self.current)  # the burst is over: log that the link is back

    def report_failure(self, error: CloudError) -> None:
        """A frame finally failed: the link is down until a probe after the hold says otherwise."""
        with self._lock:
            self._failures += 1
            hold = min(MAX_HOLD_S, self._settings.probe_interval_s * 2 ** (self._failures - 1))
            self._hold_until = time.monotonic() + hold
            self._next_probe = self._hold_until
            reason = f"{error} (next probe in {hold:g} s)"
            self._set(Link("down", None, reason, self.current.metered))
        self._wake.set()

    # -- the probe thread ---------------------------------------------------
    def _read_metered(self) -> bool:
        f = self._settings.metered_file
        return self._settings.metered or (f is not None and f.exists())

    def _loop(self) -> None:
        while not self._stop.is_set():
            metered = self._read_metered()
            if metered != self.current.metered:
                log.info("offload.link_metered", metered=metered)
                with self._lock:
                    c = self.current
                    self._set(Link(c.status, c.rtt_ms, c.reason, metered))
            now = time.monotonic()
            if now >= self._next_probe:
                self._probe()
                with self._lock:
                    self._next_probe = max(
                        self._hold_until, time.monotonic() + self._settings.probe_interval_s
                    )
            wait = min(_TICK_S, max(0.0, self._next_probe - time.monotonic()))
            self._wake.wait(wait)
            self._wake.clear()

    def _probe(self) -> None:
        self.probes += 1
        try:
            rtt = self._client.health()
        except CloudError as exc:
            with self._lock:
                if time.monotonic() >= self._hold_until:
                    self._set(Link("down", None, str(exc), self._read_metered()))
            return
        status: Status = "up" if rtt <= self._settings.max_rtt_ms else "degraded"
        reason = (
            None
            if status == "up"
            else f"RTT {rtt:.0f} ms is over max_rtt_ms {self._settings.max_rtt_ms:g}"
        )
        with self._lock:
            # A probe that raced with a failure report must not end its hold early.
            if time.monotonic() >= self._hold_until:
                self._set(Link(status, round(rtt, 2), reason, self._read_metered()))

    def _set(self, link: Link) -> None:
        """Replace the snapshot (caller holds the lock); log once per burst, not per probe."""
        self.current = link
        if link.status == "down":
            kind = (link.reason or "").split(":", 1)[0]
            if kind != self._logged[1]:
                self._logged = ("down", kind)
                log.warning("offload.link_down", reason=link.reason)
        elif self._failures == 0 and self._logged[0] != link.status:
            # While frames keep failing, a passing probe does not end the burst.
            self._logged = (link.status, "")
            log.info(
                "offload.link_status", status=link.status, rtt_ms=link.rtt_ms, metered=link.metered
            )
