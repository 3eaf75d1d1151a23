"""The command line's output as tools and systemd see it: pipes, log levels, the journal.

The daemon test runs ``edged run`` once as systemd would (stderr to a file
that ``JOURNAL_STREAM`` names), with ``--log-level debug`` after the
subcommand, on a damaged video (a truncated MP4, whose decoding makes FFmpeg
complain), and the tests below read its stderr.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edged.__main__ import build_parser
from edged.errors import EX_PIPE
from tests.helpers.daemon import base_config, write_config

#: What the daemon may print that is not a JSON line: TensorFlow Lite's minimal
#: logger announces its XNNPACK delegate once per model load and reads no
#: environment variable (docs/logging.md).
LITERT_NOTICE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


def edged(*args: str) -> list[str]:
    return [sys.executable, "-m", "edged", *args]


# -- pipes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [("config", "schema"), ("config", "reference"), ("models", "list")]
)
def test_a_closed_pipe_ends_a_printing_command_quietly(command: tuple[str, ...]) -> None:
    """The reader is gone before the first write: exit 141 (as SIGPIPE), nothing on stderr."""
    with subprocess.Popen(edged(*command), stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(30) == EX_PIPE
    assert err == b""


def test_config_schema_piped_to_head_prints_no_traceback(tmp_path: Path) -> None:
    """``edged config schema | head -1`` in a shell: the first line, an empty stderr."""
    err = tmp_path / "stderr"
    cmd = " ".join(edged("config", "schema"))
    result = subprocess.run(
        ["bash", "-c", f"{cmd} 2>{err} | head -1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout == "{\n"
    assert err.read_text() == ""


# -- --log-level -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "debug", "run"],
        ["run", "--log-level", "debug"],
        ["models", "list", "--log-level", "debug"],
        ["cloud", "serve", "--log-level", "debug"],
    ],
)
def test_log_level_is_accepted_before_or_after_the_command(argv: list[str]) -> None:
    """--log-level parses in either position and lands in the same place."""
    assert build_parser().parse_args(argv).log_level == "debug"


# -- a daemon under "systemd" ----------------------------------------------------------------


@dataclass(frozen=True)
class DaemonRun:
    code: int
    lines: list[str]


@pytest.fixture(scope="module")
def journal_run(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, media_dir: Path
) -> DaemonRun:
    """``edged run --config F --log-level debug`` with JOURNAL_STREAM naming its stderr file."""
    tmp = tmp_path_factory.mktemp("journal")
    video = tmp / "damaged.mp4"
    video.write_bytes((media_dir / "person_walking_0-30s.mp4").read_bytes()[:60_000])
    cfg = base_config(tmp, models_dir, None)  # no broker: mqtt.connect_failed is a warning
    cfg["sources"] = [{"name": "cam0", "kind": "file", "uri": video, "realtime": False}]
    cfg["pipelines"] = [
        {
            "name": "door",
            "source": "cam0",
            "task": "detection",
            "model": "ssd-mobilenet-v1-coco-int8",
            "max_fps": 30,
            "threads": 1,
        }
    ]
    config = write_config(tmp / "edged.toml", cfg)
    stderr = tmp / "stderr"
    stderr.write_bytes(b"")
    st = stderr.stat()
    env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    for key in ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL", "TF_CPP_MIN_LOG_LEVEL"):
        env.pop(key, None)
    with stderr.open("ab") as err:
        proc = subprocess.Popen(
            edged("run", "--config", str(config), "--log-level", "debug"),
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60
        # The whole damaged file has been decoded once the pipeline says so.
        while b"pipeline.finished" not in stderr.read_bytes():
            assert proc.poll() is None, stderr.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, stderr.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    return DaemonRun(code, stderr.read_text(errors="replace").splitlines())


def _json(line: str) -> dict[str, object]:
    doc = json.loads(line[3:])
    assert isinstance(doc, dict)
    return doc


def test_run_takes_log_level_after_the_subcommand(journal_run: DaemonRun) -> None:
    """``edged run --config F --log-level debug`` runs (exit 0 on SIGTERM) and logs debug."""
    assert journal_run.code == 0, journal_run.lines[-20:]
    levels = {_json(line)["level"] for line in journal_run.lines if line.startswith("<")}
    assert "debug" in levels


def test_journal_lines_carry_the_priority_of_their_level(journal_run: DaemonRun) -> None:
    """Under the journal every JSON line starts with <N>: <7> debug, <6> info, <4> warning."""
    expected = {"debug": "<7>", "info": "<6>", "warning": "<4>", "error": "<3>"}
    seen = set()
    for line in journal_run.lines:
        if line == LITERT_NOTICE:
            continue
        assert line[:3] in expected.values(), line
        level = str(_json(line)["level"])
        assert line[:3] == expected[level], line
        seen.add(level)
    assert {"debug", "info", "warning"} <= seen
    warning = [_json(line)["event"] for line in journal_run.lines if line.startswith("<4>")]
    assert "mqtt.connect_failed" in warning


def test_ffmpeg_complaints_about_a_damaged_video_are_quieted(journal_run: DaemonRun) -> None:
    """Decoding the truncated MP4 prints no "[h264 @ 0x…]" lines: every line is structured
    except TensorFlow Lite's one delegate notice."""
    assert not [line for line in journal_run.lines if line.startswith("[")]
    free_text = [line for line in journal_run.lines if not line.startswith("<")]
    assert set(free_text) <= {LITERT_NOTICE}, free_text
