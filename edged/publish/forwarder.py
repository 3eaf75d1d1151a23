"""Moves outbox rows to the broker: in order, a bounded window at a time, deleted after PUBACK.

The :class:`Forwarder` thread reads rows in ``pos`` (= ``seq``) order through
its own read-only connection and hands them to :meth:`MqttClient.send`; at
most ``window`` are awaiting their PUBACK. :meth:`MqttClient.on_delivered`
reports each acknowledged row and the outbox deletes it in its next batch.

Reconnects: everything in flight when the session ended is considered unsent.
After the next connect the forwarder starts again at the oldest stored row, so
each row is re-sent with the same bytes (same ``id``; consumers deduplicate).
paho also re-sends its own unacknowledged copies; both streams are in order,
so the first copy of every row still reaches the broker in ``seq`` order.
Nothing is sent between a disconnect and the ``on_connect`` hook of the next
session: a row sent there could overtake paho's re-sent copies.

Rate: sending is capped at ``drain_per_s`` (token bucket) so that a backlog
after an outage drains without saturating the uplink, the broker or the CPU
the pipelines need. Rows go out strictly in order, which keeps the per-topic
order of README "Delivery guarantees"; a live result queued behind a backlog of N rows waits
about N / (drain_per_s - live rate) seconds, so the cap is set far above the
live rate (2,000/s by default against tens per second).
"""

from __future__ import annotations

import collections
import json
import math
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, Final

import structlog

from edged.errors import PublishError
from edged.publish.payloads import Message
from edged.sched import background

if TYPE_CHECKING:
    from edged.publish.mqtt import MqttClient
    from edged.publish.outbox import Outbox

log = structlog.get_logger(__name__)

# One sqlite3_step for a whole chunk: every step releases and retakes the GIL,
# and with paho's thread busy during a drain each handoff cost ~60 µs (100 rows
# took 6.7 ms instead of 0.3 ms). Rows are sorted again in Python, so the
# result does not depend on the order json_group_array sees them in.
_SELECT: Final = (
    "SELECT json_group_array(json_array(pos, topic, qos, retain, id, expiry_s, born, hex(payload)))"
    " FROM (SELECT * FROM outbox WHERE pos > ? ORDER BY pos LIMIT ?)"
)
_MAX_EXPIRY_S: Final = 2**32 - 1  # MQTT 5 Message Expiry Interval is a four-byte integer


class _Bucket:
    """Token bucket: ``rate`` tokens a second, at most ``burst`` saved up; None = unlimited."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.burst = 1.0 if rate is None else max(1.0, rate * 0.05)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self, want: int) -> int:
        if self.rate is None:
            return want
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        n = min(want, int(self.tokens))
        self.tokens -= n
        return n

    def wait_s(self) -> float:
        return 0.0 if self.rate is None else max(0.0, (1.0 - self.tokens) / self.rate)


class _Row:
    __slots__ = ("born", "expiry_s", "id", "payload", "pos", "qos", "retain", "topic")

    def __init__(self, r: list[Any]) -> None:
        self.pos, self.topic, self.qos, self.retain, self.id, self.expiry_s, self.born = r[:7]
        self.payload = bytes.fromhex(r[7])


class Forwarder:
    """The thread that sends an :class:`Outbox`'s rows through an :class:`MqttClient`.

    Built by :meth:`Outbox.start`. ``poll_s`` is how often connection state is
    checked while there is nothing else to wake up for.
    """

    def __init__(
        self,
        outbox: Outbox,
        mqtt: MqttClient,
        *,
        window: int = 100,
        drain_per_s: float | None = 2000.0,
        poll_s: float = 0.01,
    ) -> None:
        if window < 1:
            raise ValueError(f"forwarder window must be at least 1, not {window}")
        self._outbox, self._mqtt = outbox, mqtt
        self._window, self._poll_s = window, poll_s
        self._bucket = _Bucket(drain_per_s)
        self._cond = threading.Condition()
        self._woken = False
        self._stopping = False
        self._stop_at: float | None = None  # stop() called: drain until then, then stop
        # Session state: _session is set by the on_connect hook and cleared as
        # soon as this thread sees the client disconnected; _reset_due makes
        # the thread start over at the oldest row before it sends again.
        self._session = False
        self._reset_due = False
        self._more = True  # rows may exist beyond the cursor: set by commits, resets, full reads
        self._epoch = 0
        # id(message) -> (pos, epoch, message); holding the message keeps id() unique.
        self._sent: dict[int, tuple[int, int, Message]] = {}
        self._in_flight = 0
        self._acked: list[int] = []  # positions acknowledged, handed to the outbox in bulk
        self._unpublishable: list[int] = []  # positions the MQTT client dropped (on_dropped)
        # ... and never sent again, even if a reset reads them before the drop is committed.
        self._skip: set[int] = set()
        self._n_sent = self._n_resent = 0
        # Forwarder-thread only: read position, rows read ahead, resend horizon.
        self._cursor = 0
        self._handed_upto = 0  # highest pos handed to MQTT (what a reset makes a re-send)
        self._resend_upto = 0
        self._buffer: collections.deque[_Row] = collections.deque()
        self._thread = threading.Thread(
            target=background(self._run), name="outbox-forwarder", daemon=True
        )

    def start(self) -> None:
        """Register with the MQTT client and start the thread."""
        self._mqtt.on_delivered(self._on_delivered)
        self._mqtt.on_dropped(self._on_dropped)
        self._mqtt.on_connect(self._on_connect)
        if self._mqtt.connected:  # connected before we registered: no old copies to overtake
            self._on_connect()
        self._thread.start()

    def stop(self, grace_s: float = 1.0) -> None:
        """Send what is committed and wait for its PUBACKs, for up to ``grace_s``; then stop.

        Rows still unsent or unacknowledged then (no session, or the grace
        ran out) stay stored and are sent after the next start.
        """
        deadline = time.monotonic() + grace_s
        with self._cond:
            self._stop_at = deadline
            self._woken = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        self._hand_over_acks()

    def wake(self) -> None:
        """New rows were committed."""
        with self._cond:
            self._woken = self._more = True
            self._cond.notify_all()

    def counters(self) -> tuple[int, int, int]:
        """(sent, resent, in flight)."""
        with self._cond:
            return self._n_sent, self._n_resent, self._in_flight

    # --- MQTT callbacks (paho's thread: short, never blocking) --------------------

    def _on_connect(self) -> None:
        with self._cond:
            self._session = self._reset_due = self._woken = True
            self._cond.notify_all()

    def _on_delivered(self, message: Message) -> None:
        with self._cond:
            # The entry holds our message, so no other live object can share its id().
            entry = self._sent.pop(id(message), None)
            if entry is None:
                return  # not ours (state, stats), or from before a reset long ago
            pos, epoch, _ = entry
            self._acked.append(pos)
            if epoch == self._epoch:
                self._in_flight -= 1
                # Wake the sender at half a window, not per PUBACK: it then sends
                # a run of messages instead of ping-ponging with this thread.
                if self._in_flight == self._window // 2 or self._stop_at is not None:
                    self._woken = True
                    self._cond.notify_all()

    def _on_dropped(self, message: Message) -> None:
        # The broker ends the session whenever this row is sent (see
        # MqttClient.on_dropped): it must leave the outbox, or the next reset
        # would send it again. Called in on_connect, before this session's reset.
        with self._cond:
            entry = self._sent.pop(id(message), None)
            if entry is not None:
                pos, epoch, _ = entry
                self._unpublishable.append(pos)
                self._skip.add(pos)
                if epoch == self._epoch:
                    self._in_flight -= 1  # as if acknowledged: it will never be

    def _hand_over_acks(self) -> None:
        with self._cond:
            acked, self._acked = self._acked, []
            dropped, self._unpublishable = self._unpublishable, []
        if acked:
            self._outbox.delivered(acked)
        for pos in dropped:
            self._outbox.drop(pos, "unpublishable")

    # --- the thread -----------------------------------------------------------------

    def _run(self) -> None:
        db: sqlite3.Connection | None = None
        generation = -1
        failure: str | None = None
        try:
            while True:
                try:
                    # The read connection follows the writer's: after a storage fault
                    # it is let go (so the file system can be unmounted and repaired)
                    # and opened again once the writer has the file back.
                    if generation != self._outbox.generation:
                        if db is not None:
                            db.close()
                            db = None
                        generation = self._outbox.generation
                    if db is None and self._outbox.readable:
                        db = self._outbox.reader()
                    if not self._step(db):
                        return
                    failure = None
                except sqlite3.Error as exc:  # e.g. busy during a checkpoint: try again
                    if str(exc) != failure:  # once per kind of failure, not every second
                        log.warning("outbox.read_failed", error=str(exc))
                    failure = str(exc)
                    if db is not None:
                        db.close()
                        db = None
                    self._sleep(1.0)
        finally:
            if db is not None:
                db.close()

    def _step(self, db: sqlite3.Connection | None) -> bool:
        """Send what the window, the rate and the session allow; False when stopping."""
        self._hand_over_acks()
        with self._cond:
            if self._stop_at is not None:
                drained = not (self._buffer or self._more or self._in_flight)
                if drained or not self._mqtt.connected or time.monotonic() >= self._stop_at:
                    self._stopping = True
            if self._stopping:
                return False
            if not self._mqtt.connected:
                self._session = False
            if self._reset_due:
                self._reset()
            room = self._window - self._in_flight if self._session and self._mqtt.connected else 0
        if room > 0 and not self._buffer and self._more and db is not None:
            self._read(db)
        n = self._bucket.take(min(room, len(self._buffer))) if room > 0 and self._buffer else 0
        if n:
            self._send([self._buffer.popleft() for _ in range(n)])
        else:
            # Only an empty token bucket is worth a short sleep; with nothing
            # buffered, wait_s() is 0 and sleeping on it would spin the thread
            # (and the GIL) while idle.
            self._sleep(
                min(self._poll_s, self._bucket.wait_s())
                if room > 0 and self._buffer
                else self._poll_s
            )
        return True

    def _reset(self) -> None:
        """A new session: everything in flight counts as unsent; start at the oldest row."""
        self._reset_due = False
        self._resend_upto = max(self._resend_upto, self._handed_upto)
        self._cursor = 0
        self._more = True
        self._buffer.clear()
        self._epoch += 1
        self._in_flight = 0
        # QoS 0 copies from before the previous session: paho discarded them
        # unsent, so no PUBACK or drop will ever name them. QoS 1/2 copies stay
        # registered: paho re-sends them every session until the broker
        # acknowledges them or the client drops them as unpublishable, and
        # either callback must still find their row (a poison row is dropped
        # only after several sessions, long after the epoch it was sent in).
        stale = [k for k, (_, e, m) in self._sent.items() if e < self._epoch - 1 and m.qos == 0]
        for key in stale:
            del self._sent[key]

    def _read(self, db: sqlite3.Connection) -> None:
        with self._cond:
            self._more = False  # a commit from now on sets it again
        chunk = json.loads(db.execute(_SELECT, (self._cursor, self._window)).fetchone()[0])
        if len(chunk) == self._window:
            self._more = True
        self._buffer.extend(sorted((_Row(r) for r in chunk), key=lambda row: int(row.pos)))

    def _send(self, rows: list[_Row]) -> None:
        """Hand ``rows`` to MQTT with the rest of their age budget as MQTT 5 expiry."""
        self._cursor = rows[-1].pos
        now, batch = self._outbox.clock(), list[tuple[int, Message]]()
        for row in rows:
            if row.pos in self._skip:
                continue
            age = now - row.born
            budget = self._outbox.max_age_s - age
            if row.expiry_s is not None:
                budget = min(budget, row.expiry_s - age)
            if budget <= 0:  # the broker would only discard it
                self._outbox.drop(row.pos, "age")
                continue
            expiry = min(math.ceil(budget), _MAX_EXPIRY_S)
            message = Message(row.topic, row.payload, row.qos, bool(row.retain), row.id, expiry)
            batch.append((row.pos, message))
        with self._cond:  # registered first: a local broker's PUBACK can overtake send()
            for pos, message in batch:
                self._sent[id(message)] = (pos, self._epoch, message)
                self._n_resent += pos <= self._resend_upto
            self._in_flight += len(batch)
            self._n_sent += len(batch)
        for i, (pos, message) in enumerate(batch):
            if self._reset_due or not self._mqtt.connected:
                # The session ended: the rest must not overtake paho's re-sent copies
                # on the next one. They are sent again after the reset.
                self._unregister(batch[i:])
                return
            try:
                self._mqtt.send(message)
                self._handed_upto = max(self._handed_upto, pos)
            except PublishError as exc:
                self._unregister([(pos, message)])
                log.error("outbox.unsendable", topic=message.topic, id=message.id, error=str(exc))
                self._outbox.drop(pos, "invalid")

    def _unregister(self, batch: list[tuple[int, Message]]) -> None:
        """Undo :meth:`_send`'s registration of messages that were not handed over."""
        with self._cond:
            for pos, message in batch:
                entry = self._sent.pop(id(message), None)
                if entry is not None and entry[1] == self._epoch:
                    self._in_flight -= 1
                self._n_sent -= 1
                self._n_resent -= pos <= self._resend_upto

    def _sleep(self, timeout: float) -> None:
        with self._cond:
            if not self._woken and not self._stopping:
                self._cond.wait(timeout)
            self._woken = False
