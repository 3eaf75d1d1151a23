"""Logging, configured once at start: one format for edged, its libraries and the journal.

Under systemd (stderr is not a TTY) every line is one JSON object, which
journald stores verbatim and fleet log shippers parse without regexes. On a
terminal the console renderer is easier to read. Pipeline and model context
is bound with :func:`structlog.contextvars.bind_contextvars` in each worker
thread, so every line a stage logs says which pipeline it belongs to.

Three more things make the journal useful (``docs/logging.md``):

- **Priority.** When stderr *is* the journal (``$JOURNAL_STREAM`` names
  stderr's device and inode, which systemd sets for ``StandardError=journal``)
  each line starts with the syslog ``<N>`` prefix of its level, which journald
  reads (``SyslogLevelPrefix=yes``, its default) and strips: ``journalctl -p
  warning`` then shows warnings and errors. Anywhere else the lines are plain
  JSON, because a file or a pipe would keep the prefix as text.
- **Python libraries.** Records of the standard ``logging`` module (paho,
  urllib3, aiohttp, asyncio, ``warnings``) go through the same processors and
  renderer, so a library's line is a JSON object with ``logger`` and
  ``level`` like edged's own, instead of free text interleaved with them.
- **Native libraries.** OpenCV, its FFmpeg back end and TensorFlow Lite write
  to stderr from C++. :func:`quiet_native_libraries` sets the environment
  variables they read *when they are loaded*, so it must run before
  ``cv2`` or a runtime is imported; ``edged``'s ``main`` calls it first thing.
  Every variable is only set when the environment does not already set it,
  so an operator can turn a library's own logging back on to debug it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Final, TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

#: syslog priority (RFC 5424 severity) of each structlog / stdlib level name.
SYSLOG_PRIORITY: Final[Mapping[str, int]] = {
    "debug": 7,
    "info": 6,
    "notset": 6,
    "warn": 4,
    "warning": 4,
    "error": 3,
    "exception": 3,
    "critical": 2,
    "fatal": 2,
}

#: What :func:`quiet_native_libraries` sets (unless the environment already does), and why.
NATIVE_LOG_ENV: Final[Mapping[str, str]] = {
    # OpenCV's own logger: errors only (its default prints warnings and info).
    "OPENCV_LOG_LEVEL": "ERROR",
    # FFmpeg inside OpenCV: AV_LOG_FATAL. Without it every damaged packet of
    # a stream prints "[h264 @ 0x…] …"; edged reports a source that fails as
    # the source's state instead (state, stats, source.* log events).
    "OPENCV_FFMPEG_LOGLEVEL": "8",
    # TensorFlow Lite / LiteRT C++ logging (absl, TF_CPP): errors only.
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def quiet_native_libraries(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Quiet the native libraries' own stderr logging; returns the variables it set.

    Call before ``cv2``, ``ai_edge_litert`` or ``onnxruntime`` is imported:
    they read these variables when they load. ONNX Runtime has no such
    variable; its sessions are created with ``log_severity_level = 3``
    (errors) in ``edged/infer/onnx.py``.
    """
    env = os.environ if environ is None else environ
    done = {}
    for key, value in NATIVE_LOG_ENV.items():
        if key not in env:
            env[key] = value
            done[key] = value
    return done


def journal_stream(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is connected to the systemd journal.

    systemd sets ``JOURNAL_STREAM=<device>:<inode>`` for a service whose
    stdout or stderr goes to the journal; comparing it with the stream's own
    ``fstat`` tells the journal apart from a file or pipe the unit (or a
    child process that inherited the variable) redirected to.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (a StringIO, closed)
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class _SyslogPrefix:
    """Wraps a renderer: prefixes its line with ``<N>``, the syslog priority of the event's level."""

    def __init__(self, renderer: structlog.types.Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, method: str, event: structlog.types.EventDict) -> str:
        level = str(event.get("level", method)).lower()
        line = self._renderer(logger, method, event)
        text = line.decode() if isinstance(line, bytes | bytearray) else str(line)
        return f"<{SYSLOG_PRIORITY.get(level, 6)}>{text}"


class _StructlogHandler(logging.Handler):
    """Writes standard-library records, formatted like edged's own lines, to the log stream.

    Through a structlog ``PrintLogger``, so that a library's line and
    edged's own never interleave within a line (they share its per-stream
    lock). With no explicit stream it writes to whatever ``sys.stderr`` is at
    the time (tests swap it).
    """

    def __init__(self, stream: TextIO | None, level: int) -> None:
        super().__init__(level)
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            structlog.PrintLogger(self._stream or sys.stderr).msg(line)
        except Exception:  # noqa: BLE001  (logging must never raise into the library that logged)
            self.handleError(record)


def configure_logging(
    level: str = "info",
    *,
    json: bool | None = None,
    stream: TextIO | None = None,
    cache: bool = False,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Configure structlog and the standard ``logging`` module for the process.

    ``json=None`` picks JSON unless ``stream`` is a TTY. ``cache=True`` caches
    loggers on first use (structlog's performance advice) and is what the
    daemon uses; short-lived commands leave it off, because a cached logger
    ignores later reconfiguration (tests' ``capture_logs()`` included).
    ``environ`` (default ``os.environ``) is where ``JOURNAL_STREAM`` is read.
    """
    out = stream if stream is not None else sys.stderr
    use_json = not out.isatty() if json is None else json
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: structlog.types.Processor
    if use_json:
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    if journal_stream(out, environ):
        renderer = _SyslogPrefix(renderer)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=cache,
    )
    _route_stdlib(_LEVELS[level], stream, renderer, use_json=use_json)


def _route_stdlib(
    level: int, stream: TextIO | None, renderer: structlog.types.Processor, *, use_json: bool
) -> None:
    """Send the ``logging`` module's records (and ``warnings``) through ``renderer``."""
    foreign: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        foreign.append(structlog.processors.dict_tracebacks)
    handler = _StructlogHandler(stream, level)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=foreign,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    reset_stdlib_logging()
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    # Python's own warnings (DeprecationWarning from a library, …) as log records.
    logging.captureWarnings(True)


def reset_stdlib_logging() -> None:
    """Undo what :func:`configure_logging` did to the ``logging`` module (tests)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StructlogHandler)]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    logging.captureWarnings(False)


#: A burst ends after this long without another occurrence, seconds.
BURST_QUIET_S: Final = 10.0

#: The logger of the burst helpers below (their lines name the event, not this module).
_burst_log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Burst:
    event: str
    keys: dict[str, Any]  # the ``by`` fields that tell this burst apart, repeated in its summary
    count: int
    first: float
    last: float


class BurstLog:
    """Logs a repeated event once per burst: a warning when it starts, a summary when it ends.

    The house rule "logged once per burst" (docs/logging.md) for refusals,
    evictions and the like, which can come by the thousand; kept here, at the
    bottom layer, so that every package can use it (docs/architecture.md).

    The first occurrence of a burst is logged as a warning with its context;
    later ones are only counted. A burst ends after ``quiet_s`` without
    another; its summary is the event again, at info, with ``burst_ended=True``,
    the ``count`` and ``duration_s``. An owner with a periodic loop calls
    :meth:`tick` so that the summary comes on time (and :meth:`end_all` at
    shutdown); otherwise it comes with the next occurrence, before that new
    burst's first line. So 1,000 refused connections write two lines, not 1,000.

    Bursts are told apart by event name (``event`` here, or one per
    :meth:`note`) and by the values of the context fields named in ``by``.
    For use from one thread at a time.
    """

    def __init__(
        self,
        event: str | None = None,
        *,
        by: tuple[str, ...] = (),
        quiet_s: float = BURST_QUIET_S,
        clock: Callable[[], float] = time.monotonic,
        logger: Any = None,
    ) -> None:
        self._event = event
        self._by = by
        self._quiet_s = quiet_s
        self._clock = clock
        self._log = _burst_log if logger is None else logger
        self._open: dict[tuple[Any, ...], _Burst] = {}

    def note(self, event: str | None = None, /, n: int = 1, **context: Any) -> None:
        """Count ``n`` occurrences of ``event``; log them only if they start a burst."""
        name = event or self._event
        if name is None:
            raise TypeError("BurstLog.note() needs an event name, here or in the constructor")
        now = self._clock()
        keys = {field: context.get(field) for field in self._by}
        key = (name, *keys.values())
        burst = self._open.get(key)
        if burst is not None and now - burst.last >= self._quiet_s:
            self._end(key)
            burst = None
        if burst is None:
            self._open[key] = _Burst(name, keys, n, now, now)
            self._log.warning(name, **context)
        else:
            burst.count += n
            burst.last = now

    def tick(self) -> None:
        """Log the summary of every burst that has been quiet for ``quiet_s``."""
        now = self._clock()
        for key, burst in list(self._open.items()):
            if now - burst.last >= self._quiet_s:
                self._end(key)

    def end_all(self) -> None:
        """Log every open burst's summary (at shutdown)."""
        for key in list(self._open):
            self._end(key)

    def _end(self, key: tuple[Any, ...]) -> None:
        burst = self._open.pop(key)
        self._log.info(
            burst.event,
            **burst.keys,
            burst_ended=True,
            count=burst.count,
            duration_s=round(burst.last - burst.first, 1),
        )


# Stage failures of one pipeline thread: caught, counted by stage, logged once per burst.
#
# A pipeline thread runs several stages per input (the task's preprocess,
# inference and decode, the tracker, the publish policy, the offload gate,
# emit). Any of them may raise on one input — a bad frame, a full disk behind
# emit, a bug — and the thread must outlive it: a dead thread while ``state``
# says ``running`` is the worst failure there is, because nobody notices.
# Pipelines therefore report every failure here and go on with the next input.
#
# While failures keep coming the pipeline is *degraded*: ``state`` shows it
# with the last error and the count, and the first failure of a burst is logged
# with its traceback (``pipeline.stage_failed``), later ones at most every
# :data:`LOG_EVERY_S` with a count. After :data:`RECOVER_AFTER` inputs in a row
# went through every stage, it is running again (``pipeline.recovered``).

#: A burst's later failures are logged at most this often, seconds.
LOG_EVERY_S: Final = 10.0
#: Clean inputs in a row that end a burst.
RECOVER_AFTER: Final = 3
#: Longest error text kept for ``state``.
_MAX_ERROR_CHARS: Final = 200


def describe(exc: BaseException) -> str:
    """``"<Type>: <message>"``, cut to a length fit for ``state``."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


class StageFailures:
    """Failure counters and burst state of one pipeline (used from its thread only)."""

    def __init__(self) -> None:
        self.by_stage: Counter[str] = Counter()
        self.last_error = ""
        self.degraded = False
        self._clean = 0
        self._burst = 0
        self._unlogged = 0
        self._last_log = 0.0

    @property
    def total(self) -> int:
        """Failures since the pipeline started, all stages."""
        return sum(self.by_stage.values())

    def failed(self, stage: str, exc: BaseException) -> None:
        """Count a failure of ``stage``; log it if it starts a burst or the last log is old."""
        self.by_stage[stage] += 1
        self.last_error = f"{stage}: {describe(exc)}"
        self._clean = 0
        self._burst += 1
        now = time.monotonic()
        if not self.degraded:
            self.degraded = True
            self._last_log = now
            self._unlogged = 0
            _burst_log.error(
                "pipeline.stage_failed", stage=stage, error=describe(exc), exc_info=exc
            )
        elif now - self._last_log >= LOG_EVERY_S:
            _burst_log.error(
                "pipeline.stage_failed",
                stage=stage,
                error=describe(exc),
                failures_since_last_log=self._unlogged + 1,
                failures_in_burst=self._burst,
            )
            self._last_log = now
            self._unlogged = 0
        else:
            self._unlogged += 1

    def succeeded(self) -> None:
        """An input went through every stage; enough in a row end the burst."""
        if not self.degraded:
            return
        self._clean += 1
        if self._clean >= RECOVER_AFTER:
            _burst_log.info(
                "pipeline.recovered", failures_in_burst=self._burst, last_error=self.last_error
            )
            self.degraded = False
            self._burst = 0
            self._clean = 0

    def reason(self) -> str:
        """What ``state`` says of a degraded pipeline."""
        return f"{self._burst} failures since it last ran clean; last: {self.last_error}"
