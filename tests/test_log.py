"""Logging: JSON lines, the journal's priority prefix, and the standard library's records."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import TextIO

import structlog
from structlog.testing import capture_logs

from edged.log import (
    NATIVE_LOG_ENV,
    BurstLog,
    configure_logging,
    journal_stream,
    quiet_native_libraries,
)


def _journal_env(stream: TextIO) -> dict[str, str]:
    st = os.fstat(stream.fileno())
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def _emit_three(path: Path, environ: dict[str, str] | None) -> list[str]:
    with path.open("w") as out:
        configure_logging("info", stream=out, environ=environ or _journal_env(out))
        log = structlog.get_logger("t")
        log.info("a.info")
        log.warning("a.warning")
        log.error("a.error")
    return path.read_text().splitlines()


def test_lines_to_the_journal_carry_their_syslog_priority(tmp_path: Path) -> None:
    """stderr is the journal (JOURNAL_STREAM names it): <6> info, <4> warning, <3> error."""
    lines = _emit_three(tmp_path / "journal", None)
    assert [line[:3] for line in lines] == ["<6>", "<4>", "<3>"]
    assert [json.loads(line[3:])["event"] for line in lines] == ["a.info", "a.warning", "a.error"]


def test_lines_elsewhere_stay_plain_json(tmp_path: Path) -> None:
    """JOURNAL_STREAM naming another file (a child whose stderr was redirected): no prefix."""
    other = tmp_path / "other"
    other.write_text("")
    st = other.stat()
    lines = _emit_three(tmp_path / "log", {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert [json.loads(line)["level"] for line in lines] == ["info", "warning", "error"]


def test_journal_stream_needs_a_matching_device_and_inode(tmp_path: Path) -> None:
    """Unset, malformed or foreign JOURNAL_STREAM values are not the journal."""
    with (tmp_path / "f").open("w") as out:
        assert journal_stream(out, _journal_env(out))
        assert not journal_stream(out, {})
        assert not journal_stream(out, {"JOURNAL_STREAM": "garbage"})
        assert not journal_stream(out, {"JOURNAL_STREAM": "1:2"})


def test_library_records_are_rendered_like_edgeds_own_lines(tmp_path: Path) -> None:
    """A paho/urllib3-style stdlib record becomes one JSON line with logger, level, event, and
    the journal prefix; records below the level are dropped."""
    path = tmp_path / "journal"
    with path.open("w") as out:
        configure_logging("info", stream=out, environ=_journal_env(out))
        logging.getLogger("urllib3.connectionpool").debug("Starting new HTTPS connection")
        logging.getLogger("paho.mqtt.client").warning("failed to receive on socket: %s", "EOF")
    (line,) = path.read_text().splitlines()
    assert line.startswith("<4>{")
    doc = json.loads(line[3:])
    assert doc["event"] == "failed to receive on socket: EOF"
    assert doc["logger"] == "paho.mqtt.client"
    assert doc["level"] == "warning"
    assert "timestamp" in doc


def test_library_exceptions_stay_on_one_json_line(tmp_path: Path) -> None:
    """A stdlib ``log.exception`` is one line with a structured traceback, not free text."""
    path = tmp_path / "log"
    with path.open("w") as out:
        configure_logging("info", stream=out, json=True)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("aiohttp.server").exception("Error handling request")
    (line,) = path.read_text().splitlines()
    doc = json.loads(line)
    assert doc["level"] == "error"
    assert doc["exception"][0]["exc_type"] == "ValueError"


def test_python_warnings_become_log_lines(tmp_path: Path) -> None:
    """``warnings.warn`` from a library is a JSON line of the py.warnings logger."""
    path = tmp_path / "log"
    with path.open("w") as out:
        configure_logging("info", stream=out, json=True)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("old API", DeprecationWarning, stacklevel=1)
    (line,) = path.read_text().splitlines()
    doc = json.loads(line)
    assert doc["logger"] == "py.warnings"
    assert "old API" in doc["event"]


def test_native_library_variables_keep_the_operators_values() -> None:
    """quiet_native_libraries sets what is unset and leaves what the environment already says."""
    env = {"OPENCV_LOG_LEVEL": "DEBUG"}
    done = quiet_native_libraries(env)
    assert env["OPENCV_LOG_LEVEL"] == "DEBUG"
    assert "OPENCV_LOG_LEVEL" not in done
    assert {k: env[k] for k in done} == {k: v for k, v in NATIVE_LOG_ENV.items() if k in done}
    assert set(done) == set(NATIVE_LOG_ENV) - {"OPENCV_LOG_LEVEL"}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_logs_its_first_event_and_then_one_summary_with_the_count() -> None:
    clock = Clock()
    bursts = BurstLog(quiet_s=10, clock=clock)
    with capture_logs() as logs:
        for _ in range(1000):
            bursts.note("cloud.unauthorized", path="/health")
            clock.now += 0.01
        bursts.tick()  # not quiet long enough yet
        clock.now += 10
        bursts.tick()
        bursts.note("cloud.unauthorized", path="/health")  # a new burst
        bursts.end_all()
    assert [(e["event"], e.get("count")) for e in logs] == [
        ("cloud.unauthorized", None),
        ("cloud.unauthorized", 1000),
        ("cloud.unauthorized", None),
        ("cloud.unauthorized", 1),
    ]
    assert logs[1]["burst_ended"] is True


def test_bursts_told_apart_by_a_field_are_counted_and_summarised_apart() -> None:
    clock = Clock()
    bursts = BurstLog(by=("reason",), clock=clock)
    with capture_logs() as logs:
        bursts.note("outbox.evicting", 5, reason="size", max_mb=1)
        bursts.note("outbox.evicting", 2, reason="age", max_mb=1)
        bursts.note("outbox.evicting", 7, reason="size", max_mb=1)
        bursts.end_all()
    assert [(e["event"], e["reason"], e.get("count")) for e in logs] == [
        ("outbox.evicting", "size", None),
        ("outbox.evicting", "age", None),
        ("outbox.evicting", "size", 12),
        ("outbox.evicting", "age", 2),
    ]


def test_without_a_tick_the_summary_comes_before_the_next_bursts_first_line() -> None:
    clock = Clock()
    bursts = BurstLog("command.not_allowed", quiet_s=10, clock=clock)
    with capture_logs() as logs:
        for _ in range(20):
            bursts.note(command="reload")
            clock.now += 1
        clock.now += 10
        bursts.note(command="reload")
    assert [(e["event"], e["log_level"], e.get("count")) for e in logs] == [
        ("command.not_allowed", "warning", None),
        ("command.not_allowed", "info", 20),
        ("command.not_allowed", "warning", None),
    ]
    assert logs[1]["duration_s"] == 19.0
