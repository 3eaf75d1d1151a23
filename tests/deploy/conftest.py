"""What the deploy stage needs, and its timings in pytest's terminal summary."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.deploy.machine import REPORT

TOOLS = (
    "debootstrap",
    "systemd-nspawn",
    "nsenter",
    "tar",
    "zstd",
    "ansible-playbook",
    "ansible-lint",
    "mosquitto",
)


def require_deploy_tools(*tools: str) -> None:
    """Skip (fail under CI=true) unless we are root and every tool is installed."""
    wanted = tools or TOOLS
    missing = [t for t in wanted if not (shutil.which(t) or shutil.which(t, path="/usr/sbin"))]
    problems = [f"missing {', '.join(missing)}"] if missing else []
    if os.geteuid() != 0 and wanted is TOOLS:
        problems.append("root (debootstrap, chroot and systemd-nspawn need it)")
    if not problems:
        return
    message = (
        f"deploy stage: {'; '.join(problems)}. `bash .ci/run` installs the tools; "
        "deselect the stage with -m 'not deploy'"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print how long each deploy step took, and the figures the stage measured."""
    if REPORT:
        terminalreporter.section("deploy stage")
        for key, value in REPORT.items():
            terminalreporter.write_line(f"{key:48} {value}")
