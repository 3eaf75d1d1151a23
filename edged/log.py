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
from collections.abc import Mapping, MutableMapping
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
