"""Errors and exit codes."""

from __future__ import annotations

from edged import errors


def test_exit_codes_are_the_values_systemd_and_shells_know() -> None:
    # The unit file, docs/deployment.md and scripts compare against the
    # numbers, not the names: a renumbered code would break them silently.
    assert (errors.EX_USAGE, errors.EX_UNAVAILABLE, errors.EX_CONFIG) == (64, 69, 78)
    assert (errors.EX_INTERRUPTED, errors.EX_PIPE) == (128 + 2, 128 + 13)
