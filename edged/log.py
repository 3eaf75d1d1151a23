"""structlog configuration, done once at start.

Under systemd (stderr is not a TTY) every line is one JSON object, which
journald stores verbatim and fleet log shippers parse without regexes. On a
terminal the console renderer is easier to read. Pipeline and model context
is bound with :func:`structlog.contextvars.bind_contextvars` in each worker
thread, so every line a stage logs says which pipeline it belongs to.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    level: str = "info",
    *,
    json: bool | None = None,
    stream: TextIO | None = None,
    cache: bool = False,
) -> None:
    """Configure structlog for the process.

    ``json=None`` picks JSON unless ``stream`` is a TTY. ``cache=True`` caches
    loggers on first use (structlog's performance advice) and is what the
    daemon uses; short-lived commands leave it off, because a cached logger
    ignores later reconfiguration (tests' ``capture_logs()`` included).
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
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=cache,
    )
