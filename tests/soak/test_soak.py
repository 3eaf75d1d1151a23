"""Soak: the real daemon for minutes on end while its broker restarts and its cloud flaps.

One ``edged run`` process runs detection (SSD-MobileNet, offload on) and pose
(MoveNet) on one looping real-time clip, and sound classification (YAMNet) on
a looping real-time recording. Meanwhile:

- mosquitto (persistent, unbounded queues) is stopped every ``BROKER_EVERY_S``
  for ``BROKER_DOWN_S`` and started again on the same port; a QoS 1
  subscriber with a persistent session records everything;
- the reference cloud server (``edged cloud serve``, TLS, bearer token) is
  down ``CLOUD_DOWN_S`` out of every ``CLOUD_UP_S + CLOUD_DOWN_S``;
- every ``SAMPLE_S`` the daemon's resident memory, open fds and threads are
  read from ``/proc``, and its ``stats`` messages give the outbox depth.

Then SIGTERM, and the checks: no growth of memory, fds or threads after
warm-up, the outbox back to ~0 after every broker restart, every accepted
result delivered (``seq`` gap-free up to the outbox's last), exit 0, every
pipeline publishing throughout, verdicts from the cloud whenever it was up.

CI runs it for 5 minutes (``EDGED_SOAK_S``, default 300). 30 minutes:

    EDGED_SOAK_S=1800 pytest -m slow tests/soak -s

``-s`` shows the figures table; ``EDGED_SOAK_REPORT=FILE`` also writes the
figures to FILE as JSON. The daemon inherits the environment, so settings can
be overridden the usual way, e.g. event snapshots (on by default, README
"Events") turned off:

    EDGED_EVENTS__SNAPSHOTS=false pytest -m slow tests/soak -s

The memory bound holds because the daemon caps glibc's malloc arenas
(``edged/daemon/memory.py``); ``MALLOC_ARENA_MAX=8`` in the environment shows
the climb without the cap.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from edged.demo.broker import free_port
from tests.helpers.broker import RunningBroker, Subscriber, TlsMaterial, matching
from tests.helpers.daemon import Daemon, base_config, walking_source, write_config
from tests.helpers.outbox_child import RoomyBroker
from tests.helpers.procfs import ProcSample, sample, theil_sen_slope
from tests.offload.servers import CloudServer

SOAK_S = float(os.environ.get("EDGED_SOAK_S", "300"))
SAMPLE_S = 5.0  # /proc
STATS_S = 2.0  # the daemon's stats messages (outbox depth)
BROKER_EVERY_S, BROKER_DOWN_S = 60.0, 5.0
CLOUD_UP_S, CLOUD_DOWN_S = 25.0, 20.0
#: Start-up (models, first results) before the soak clock starts, and the
#: stop, final drain and teardown after it; the timeout covers both.
MARGIN_S = 240.0

# Bounds of the checks.
RSS_GROWTH_MB = 5.0
FD_SLACK, THREAD_SLACK = 4, 2
DEPTH_SETTLED = 25  # outbox rows: about a second of results, far below one outage's backlog
SETTLE_S = 15.0  # after the broker is back, the backlog must be gone within this
MAX_GAP_S = 60.0  # longest stretch of capture time without a result, per pipeline
MIN_UP_WINDOW_S = 15.0  # cloud up windows at least this long must yield a verdict

DEV = "edged/testdev"
RESULT_KINDS = frozenset({"detections", "pose", "audio", "events", "offload"})
#: pipeline → the topic kind it must publish throughout
PIPELINES = {"door": "detections", "body": "pose", "ears": "audio"}

# alone: its resource bounds need the machine to itself (.ci/run runs it after the rest).
pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.alone]


# --- what the subscriber records ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    """One result message as received (duplicates are recorded again)."""

    topic: str
    pipeline: str
    kind: str
    seq: int
    id: str
    ts: float  # capture time of the frame or window, epoch seconds
    ref: str | None  # offload verdicts: the local result's id


class Tally(Subscriber):
    """A persistent subscriber that keeps results and ``stats`` compactly, parsed once.

    A 30-minute run brings ~100,000 messages; keeping only what the checks
    need keeps this process small and its callback short.
    """

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port, f"{DEV}/#", client_id="soak-subscriber")
        self.results: list[Result] = []
        self.stats: list[tuple[float, dict[str, Any]]] = []  # (received, epoch s), document
        self.errors: list[str] = []

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        try:
            if len(parts) == 4 and parts[3] in RESULT_KINDS:
                doc = json.loads(msg.payload)
                ts = datetime.fromisoformat(doc["ts"]).timestamp()
                item = Result(
                    msg.topic, parts[2], parts[3], doc["seq"], doc["id"], ts, doc.get("ref")
                )
                with self._cond:
                    self.results.append(item)
            elif msg.topic == f"{DEV}/stats":
                stats = json.loads(msg.payload)
                with self._cond:
                    self.stats.append((time.time(), stats))
            else:  # availability, state, labels: few, kept whole
                super()._on_message(client, userdata, msg)
        except (ValueError, KeyError, TypeError) as exc:  # an exception would end paho's thread
            self.errors.append(f"{msg.topic}: {exc!r}: {msg.payload[:200]!r}")

    def snapshot(self) -> tuple[list[Result], list[tuple[float, dict[str, Any]]]]:
        with self._cond:
            return list(self.results), list(self.stats)

    def seqs(self) -> set[int]:
        with self._cond:
            return {r.seq for r in self.results}


# --- chaos ----------------------------------------------------------------------------------


class Flapper(threading.Thread):
    """Takes a service down for ``down_s`` every ``period_s`` (the first time after ``first_s``).

    Records each outage as (down, up) in epoch seconds. :meth:`finish` cuts a
    running outage short, so that after it the service is always up again.
    """

    def __init__(
        self,
        name: str,
        down: Callable[[], object],
        up: Callable[[], object],
        *,
        first_s: float,
        period_s: float,
        down_s: float,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._down, self._up = down, up
        self.first_s, self.period_s, self.down_s = first_s, period_s, down_s
        self.outages: list[tuple[float, float]] = []
        self.error: Exception | None = None
        self._finish = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        try:
            for k in itertools.count():
                due = t0 + self.first_s + k * self.period_s
                if self._finish.wait(max(0.0, due - time.monotonic())):
                    return
                went = time.time()
                self._down()
                self._finish.wait(self.down_s)
                self._up()
                self.outages.append((went, time.time()))
        except Exception as exc:  # noqa: BLE001  (re-raised by finish(), in the test thread)
            self.error = exc

    def finish(self) -> None:
        self._finish.set()
        self.join(60)
        assert not self.is_alive(), f"{self.name}: still busy 60 s after the soak ended"
        if self.error is not None:
            raise AssertionError(f"{self.name} failed: {self.error!r}") from self.error


# --- the run --------------------------------------------------------------------------------


@dataclass
class Soak:
    """What one soak run saw, in time order."""

    start: float  # epoch s when the soak clock started (daemon online, every pipeline publishing)
    end: float  # epoch s when it ended (just before SIGTERM)
    samples: list[ProcSample]
    broker_outages: list[tuple[float, float]]
    cloud_outages: list[tuple[float, float]]
    results: list[Result] = field(default_factory=list)
    stats: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    rc: int | None = None
    stop_s: float = 0.0
    outbox_left: int = -1
    last_seq: int = 0


def soak_config(
    tmp: Path,
    models_dir: Path,
    media_dir: Path,
    broker: RunningBroker,
    cloud: CloudServer,
    ca: Path,
    token: Path,
) -> Path:
    cfg = base_config(tmp, models_dir, broker)
    cfg["stats_interval_s"] = STATS_S
    cfg["sources"] = [
        walking_source(media_dir, realtime=True, loop=True, fps=10),
        {
            "name": "mic0",
            "kind": "wav",
            "uri": media_dir / "speech_jfk.wav",
            "realtime": True,
            "loop": True,
        },
    ]
    cfg["pipelines"] = [
        {
            "name": "door",
            "source": "cam0",
            "task": "detection",
            "model": "ssd-mobilenet-v1-coco-int8",
            "labels": ["person"],
            "publish": "all",
            "max_fps": 10,
            "threads": 1,
            # People on this clip score 0.57-0.69 (MEDIA.md): the band offers most
            # frames with a person, and the budget below picks some of them.
            "offload": {"enabled": True, "band": [0.35, 0.75]},
        },
        {
            "name": "body",
            "source": "cam0",
            "task": "pose",
            "model": "movenet-lightning-int8",
            "publish": "all",
            "max_fps": 10,
            "threads": 1,
            "threshold": 0.3,
        },
        {
            "name": "ears",
            "source": "mic0",
            "task": "audio",
            "model": "yamnet",
            "publish": "all",
            "threads": 1,
            "threshold": 0.1,
        },
    ]
    cfg["offload"] = {
        "url": cloud.url,
        "ca_file": ca,
        "token_file": token,
        "probe_interval_s": 1,
        # Loopback RTT says nothing about a link, and the server shares two busy cores.
        "max_rtt_ms": 5000,
        "frames_per_minute": 30,
        "mb_per_day": 500,
    }
    return write_config(tmp / "edged.toml", cfg)


def run_soak(daemon: Daemon, tally: Tally, broker: RoomyBroker, cloud: CloudServer) -> Soak:
    """Start the chaos, sample the daemon every SAMPLE_S for SOAK_S, end the chaos."""
    assert daemon.proc is not None
    pid = daemon.proc.pid
    tally.wait_for(matching(f"{DEV}/availability", b"online"), timeout=60)
    deadline = time.monotonic() + 60
    while {(r.pipeline, r.kind) for r in tally.snapshot()[0]} < set(PIPELINES.items()):
        assert time.monotonic() < deadline, (
            f"not every pipeline published:\n{daemon.output[-3000:]}"
        )
        assert daemon.proc.poll() is None, f"daemon exited:\n{daemon.output[-3000:]}"
        time.sleep(0.2)

    broker_flap = Flapper(
        "broker-restarts",
        broker.stop,
        broker.start,
        first_s=BROKER_EVERY_S,
        period_s=BROKER_EVERY_S,
        down_s=BROKER_DOWN_S,
    )
    cloud_flap = Flapper(
        "cloud-flaps",
        cloud.stop,
        cloud.start,
        first_s=CLOUD_UP_S,
        period_s=CLOUD_UP_S + CLOUD_DOWN_S,
        down_s=CLOUD_DOWN_S,
    )
    start, t0 = time.time(), time.monotonic()
    broker_flap.start()
    cloud_flap.start()
    samples: list[ProcSample] = []
    try:
        for k in itertools.count():
            now = time.monotonic()
            if daemon.proc.poll() is not None:
                raise AssertionError(
                    f"the daemon exited ({daemon.proc.returncode}) {now - t0:.0f} s into the soak:"
                    f"\n{daemon.output[-5000:]}"
                )
            samples.append(sample(pid, now - t0))
            if now - t0 >= SOAK_S:
                break
            time.sleep(max(0.0, min(t0 + (k + 1) * SAMPLE_S, t0 + SOAK_S) - time.monotonic()))
    finally:
        broker_flap.finish()
        cloud_flap.finish()
    return Soak(
        start=start,
        end=time.time(),
        samples=samples,
        broker_outages=broker_flap.outages,
        cloud_outages=cloud_flap.outages,
    )


def outbox_after_exit(path: Path) -> tuple[int, int]:
    """(rows left, last seq assigned) in the outbox file of a daemon that has exited."""
    db = sqlite3.connect(path)
    try:
        left = int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        row = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
    finally:
        db.close()
    return left, int(row[0]) if row else 0


# --- figures --------------------------------------------------------------------------------


def warmup_s(duration: float) -> float:
    """Warm-up: two broker periods or the first 20 %, whichever is longer; at most half the run.

    By then the daemon has been through a broker restart (reconnect, backlog
    drain) and two cloud outages (failed frames, new TLS sessions), so every
    path has allocated its high-water mark once: thread arenas, runtimes'
    scratch buffers, SQLite's page cache, connection pools. In 300 s runs RSS
    still rose ~3 MB between 60 s and 240 s, ever more slowly, to the same
    plateau (155 MB) in each run; growth after this point is what a leak
    looks like. Short development runs (EDGED_SOAK_S=90) keep half their
    samples to compare.
    """
    return min(max(2 * BROKER_EVERY_S, 0.2 * duration), duration / 2)


def window_s(duration: float) -> float:
    """Length of the baseline and final windows: a minute, or a third of the post-warm-up part."""
    return min(60.0, (duration - warmup_s(duration)) / 3)


def figures(run: Soak) -> dict[str, Any]:
    """Every number the checks use and the table shows."""
    duration = run.samples[-1].t
    warm, win = warmup_s(duration), window_s(duration)
    post = [s for s in run.samples if s.t >= warm]
    early = [s for s in post if s.t < warm + win]
    late = [s for s in post if s.t >= duration - win]
    # RSS: compare medians of the first post-warm-up window and the last window
    # (a median ignores the transient peak of a backlog drain or a GC), and fit a
    # Theil-Sen slope over all post-warm-up samples (robust against such
    # outliers too, and unlike the two windows it uses every sample): both must
    # stay within RSS_GROWTH_MB over the post-warm-up span.
    rss_early = statistics.median(s.rss_mb for s in early)
    rss_late = statistics.median(s.rss_mb for s in late)
    slope = theil_sen_slope([(s.t, s.rss_mb) for s in post])  # MB per second

    ids: dict[str, set[str]] = defaultdict(set)
    for r in run.results:
        ids[f"{r.pipeline}/{r.kind}"].add(r.id)
    last_stats = run.stats[-1][1] if run.stats else {}
    offload = last_stats.get("offload", {})
    depths = [doc["outbox"]["depth"] for _, doc in run.stats if "outbox" in doc]
    # stats are published only while connected, so they never show a backlog at its
    # peak; the results captured while the broker was down are that backlog.
    backlogs = [
        len({r.id for r in run.results if down <= r.ts < up}) for down, up in run.broker_outages
    ]
    pipelines = {
        name: {
            "processed": p["processed"],
            "lost": p.get("dropped", p.get("skipped", 0)),
            "errors": p["errors"],
            "status": p["status"],
            "max_gap_s": round(longest_gap(run, name)[0], 2),
        }
        for name, p in last_stats.get("pipelines", {}).items()
    }
    return {
        "duration_s": round(duration, 1),
        "warmup_s": warm,
        "samples": len(run.samples),
        "rss_mb": {
            "start": round(run.samples[0].rss_mb, 1),
            "after_warmup": round(rss_early, 1),
            "end": round(rss_late, 1),
            "growth": round(rss_late - rss_early, 2),
            "slope_mb_per_h": round(slope * 3600, 2),
            "slope_growth": round(slope * (duration - warm), 2),
        },
        "fds": {
            "min": min(s.fds for s in run.samples),
            "max": max(s.fds for s in run.samples),
            "baseline_max": max(s.fds for s in early),
            "last_max": max(s.fds for s in late),
        },
        "threads": {
            "min": min(s.threads for s in run.samples),
            "max": max(s.threads for s in run.samples),
            "baseline_max": max(s.threads for s in early),
            "last_max": max(s.threads for s in late),
        },
        "outbox_depth_max": max(depths, default=0),
        "outage_backlog_max": max(backlogs, default=0),
        "outbox_resent": last_stats.get("outbox", {}).get("resent", 0),
        "results_delivered": {k: len(v) for k, v in sorted(ids.items())},
        "pipelines": pipelines,
        "last_seq": run.last_seq,
        "messages_received": len(run.results),
        "duplicates": len(run.results) - len({r.id for r in run.results}),
        "broker_restarts": len(run.broker_outages),
        "cloud_flaps": len(run.cloud_outages),
        "offloads_confirmed": len(ids["door/offload"]),
        "offload_decisions": offload.get("decisions", {}),
        "exit_code": run.rc,
        "stop_s": round(run.stop_s, 2),
    }


def longest_gap(run: Soak, pipeline: str) -> tuple[float, float]:
    """(seconds, since) of the longest stretch of capture time without a result of ``pipeline``.

    Capture time, not arrival: results held back by a broker outage still
    count for when they were made.
    """
    kind = PIPELINES.get(pipeline)
    stamps = sorted(r.ts for r in run.results if (r.pipeline, r.kind) == (pipeline, kind))
    edges = [run.start, *(t for t in stamps if run.start <= t <= run.end), run.end]
    gap, at = max((b - a, a) for a, b in itertools.pairwise(edges))
    return gap, at - run.start


def series(run: Soak) -> dict[str, list[float] | list[int]]:
    """The samples and the outbox depths over time, for the JSON report."""
    return {
        "t": [round(s.t, 1) for s in run.samples],
        "rss_mb": [round(s.rss_mb, 2) for s in run.samples],
        "fds": [s.fds for s in run.samples],
        "threads": [s.threads for s in run.samples],
        "outbox_t": [round(t - run.start, 1) for t, doc in run.stats if "outbox" in doc],
        "outbox_depth": [doc["outbox"]["depth"] for _, doc in run.stats if "outbox" in doc],
    }


def table(f: dict[str, Any]) -> str:
    rss, fds, thr = f["rss_mb"], f["fds"], f["threads"]
    delivered = ", ".join(f"{k} {v}" for k, v in f["results_delivered"].items())
    decisions = ", ".join(f"{k} {v}" for k, v in sorted(f["offload_decisions"].items()))
    work = ", ".join(
        f"{k} {p['processed']} done/{p['lost']} dropped/{p['errors']} errors/"
        f"longest gap {p['max_gap_s']:.1f} s"
        for k, p in f["pipelines"].items()
    )
    rows = [
        (
            "duration",
            f"{f['duration_s']:.0f} s (warm-up {f['warmup_s']:.0f} s), {f['samples']} samples every {SAMPLE_S:.0f} s",
        ),
        (
            "RSS MB",
            f"start {rss['start']}, after warm-up {rss['after_warmup']}, end {rss['end']}: growth {rss['growth']:+.2f}, slope {rss['slope_mb_per_h']:+.2f} MB/h",
        ),
        (
            "open fds",
            f"min {fds['min']}, max {fds['max']} (baseline max {fds['baseline_max']}, last max {fds['last_max']})",
        ),
        (
            "threads",
            f"min {thr['min']}, max {thr['max']} (baseline max {thr['baseline_max']}, last max {thr['last_max']})",
        ),
        (
            "outbox depth",
            f"max {f['outbox_depth_max']} in stats (sent while connected); backlog of an outage up to {f['outage_backlog_max']} rows, {f['outbox_resent']} resent",
        ),
        ("delivered", delivered),
        ("pipelines", work),
        (
            "seq",
            f"1..{f['last_seq']}, {f['messages_received']} messages, {f['duplicates']} duplicates",
        ),
        (
            "broker restarts",
            f"{f['broker_restarts']} (down {BROKER_DOWN_S:.0f} s every {BROKER_EVERY_S:.0f} s)",
        ),
        (
            "cloud flaps",
            f"{f['cloud_flaps']} (down {CLOUD_DOWN_S:.0f} s of every {CLOUD_UP_S + CLOUD_DOWN_S:.0f} s)",
        ),
        ("offloads", f"{f['offloads_confirmed']} confirmed; decisions: {decisions}"),
        ("SIGTERM", f"exit {f['exit_code']} in {f['stop_s']:.1f} s"),
    ]
    return "\nsoak figures\n" + "\n".join(f"  {k:<16} {v}" for k, v in rows)


# --- the test -------------------------------------------------------------------------------


@pytest.mark.timeout(SOAK_S + MARGIN_S)
def test_soak(tmp_path: Path, models_dir: Path, media_dir: Path, tls_material: TlsMaterial) -> None:
    """Minutes of detection + pose + audio through broker restarts and cloud flaps: no leak, nothing lost."""
    token = tmp_path / "offload_token"
    token.write_text("soak-token\n")
    token.chmod(0o600)
    broker = RoomyBroker(port=free_port(), persistence=True, workdir=tmp_path / "broker")
    cloud = CloudServer(models_dir, tls_material, token, tmp_path)
    tally = Tally(broker.host, broker.port)
    try:
        broker.start()
        cloud.start()
        tally.start()
        config = soak_config(
            tmp_path, models_dir, media_dir, RunningBroker(broker), cloud, tls_material.ca, token
        )
        with Daemon(config) as daemon:
            run = run_soak(daemon, tally, broker, cloud)
            run.rc, run.stop_s = daemon.stop()
        run.outbox_left, run.last_seq = outbox_after_exit(tmp_path / "state" / "outbox.sqlite3")
        # Final drain: mosquitto hands the subscriber what it still holds for it.
        wanted = set(range(1, run.last_seq + 1))
        deadline = time.monotonic() + 30
        while not wanted <= tally.seqs() and time.monotonic() < deadline:
            time.sleep(0.5)
        run.results, run.stats = tally.snapshot()
    finally:
        tally.close()
        cloud.stop()
        broker.close()

    f = figures(run)
    print(table(f))
    if report := os.environ.get("EDGED_SOAK_REPORT"):
        Path(report).write_text(json.dumps(f | {"series": series(run)}, indent=1) + "\n")

    assert not tally.errors, tally.errors[:5]
    check_exit(run, daemon.output)
    check_log(daemon.output)
    check_nothing_lost(run)
    check_resources(f)
    check_outbox_settles(run)
    check_pipelines_throughout(run, f)
    check_offload(run, f)


# --- the checks -----------------------------------------------------------------------------


def check_exit(run: Soak, output: str) -> None:
    assert run.rc == 0, f"exit code {run.rc} on SIGTERM:\n{output[-5000:]}"
    assert run.stop_s <= 10, f"SIGTERM took {run.stop_s:.1f} s (README, How it works: within 10 s)"


def check_log(output: str) -> None:
    """Outages are warnings; an error or a traceback means some part of the daemon broke."""
    assert "Traceback" not in output, output[output.index("Traceback") :][:5000]
    for line in output.splitlines():
        if line.startswith("{") and json.loads(line).get("level") in ("error", "critical"):
            raise AssertionError(f"the daemon logged an error: {line}")


def check_nothing_lost(run: Soak) -> None:
    """Every accepted result (seq 1..last_seq of the outbox) arrived; one id per seq; order per topic."""
    assert run.outbox_left == 0, f"{run.outbox_left} rows still in the outbox after a clean stop"
    assert run.last_seq > 0
    seen = {r.seq for r in run.results}
    missing = sorted(set(range(1, run.last_seq + 1)) - seen)
    assert not missing, (
        f"{len(missing)} of {run.last_seq} accepted results never arrived: "
        f"seq {missing[:20]}{' …' if len(missing) > 20 else ''}"
    )
    assert max(seen) == run.last_seq, f"seq {max(seen)} arrived, above the outbox's {run.last_seq}"
    id_of: dict[int, str] = {}
    firsts: dict[str, set[int]] = defaultdict(set)
    last: dict[str, int] = {}
    for r in run.results:  # in arrival order
        if id_of.setdefault(r.seq, r.id) != r.id:
            raise AssertionError(f"seq {r.seq} carried two ids: {id_of[r.seq]} and {r.id}")
        if r.seq in firsts[r.topic]:
            continue  # a duplicate: allowed (at least once)
        assert r.seq > last.get(r.topic, 0), (
            f"{r.topic}: seq {r.seq} arrived first after seq {last[r.topic]} (README, Delivery guarantees: in order)"
        )
        firsts[r.topic].add(r.seq)
        last[r.topic] = r.seq


def check_resources(f: dict[str, Any]) -> None:
    rss = f["rss_mb"]
    assert rss["growth"] <= RSS_GROWTH_MB, f"RSS grew {rss['growth']} MB after warm-up: {rss}"
    assert rss["slope_growth"] <= RSS_GROWTH_MB, f"RSS trend {rss['slope_mb_per_h']} MB/h: {rss}"
    for what, slack in (("fds", FD_SLACK), ("threads", THREAD_SLACK)):
        got = f[what]
        assert got["last_max"] <= got["baseline_max"] + slack, f"{what} grew: {got}"


def check_outbox_settles(run: Soak) -> None:
    """Once the broker has been back SETTLE_S, the outbox holds no more than ~a second of results."""
    ups = [run.start] + [up for _, up in run.broker_outages]
    downs = [down for down, _ in run.broker_outages] + [run.end]
    for up, down in zip(ups, downs, strict=True):
        settled = [doc["outbox"]["depth"] for t, doc in run.stats if up + SETTLE_S <= t < down]
        if down - up < SETTLE_S + 3 * STATS_S:
            continue  # too short a stretch to judge (the end of the run)
        assert settled, f"no stats between {up - run.start:.0f} s and {down - run.start:.0f} s"
        assert max(settled) <= DEPTH_SETTLED, (
            f"outbox depth {settled} {SETTLE_S:.0f} s or more after the broker came back "
            f"at {up - run.start:.0f} s"
        )


def check_pipelines_throughout(run: Soak, f: dict[str, Any]) -> None:
    """Each pipeline ran without errors and published all along (no long gap in capture time)."""
    assert set(f["pipelines"]) == set(PIPELINES), f["pipelines"]
    for name, p in f["pipelines"].items():
        assert (p["status"], p["errors"]) == ("running", 0), f"{name}: {p}"
    for pipeline, kind in PIPELINES.items():
        gap, since = longest_gap(run, pipeline)
        assert gap <= MAX_GAP_S, (
            f"{pipeline}/{kind}: no result for {gap:.0f} s from {since:.0f} s into the soak"
        )


def check_offload(run: Soak, f: dict[str, Any]) -> None:
    """Verdicts came in every long enough stretch the cloud was up, each about a delivered result."""
    verdicts = [r for r in run.results if r.kind == "offload"]
    local = {r.id for r in run.results if r.kind == "detections"}
    orphans = {str(v.ref) for v in verdicts} - local  # "None": a verdict without ref
    assert not orphans, f"verdicts about results never delivered: {sorted(orphans)[:5]}"
    ups = [run.start] + [up for _, up in run.cloud_outages]
    downs = [down for down, _ in run.cloud_outages] + [run.end]
    for up, down in zip(ups, downs, strict=True):
        if down - up < MIN_UP_WINDOW_S:
            continue
        n = sum(up <= v.ts < down for v in verdicts)
        assert n > 0, (
            f"no verdict for frames captured while the cloud was up "
            f"({up - run.start:.0f}-{down - run.start:.0f} s); decisions {f['offload_decisions']}"
        )
    if run.cloud_outages:
        assert f["offload_decisions"].get("link_down", 0) > 0, "the flaps went unnoticed"
