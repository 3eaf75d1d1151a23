"""Shared fixtures: where the real models and media are, and the real broker.

Models and media are never copied into the repo. Tests find them through
``EDGED_MODEL_MIRROR`` / ``EDGED_MEDIA_DIR`` (set by ``.ci/run``); without
them, the ``shared/`` folder beside the checkout is used, as in CI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import structlog

from edged.catalog.catalog import load_catalog
from edged.catalog.fetch import pull
from edged.log import reset_stdlib_logging
from tests.helpers.broker import *  # noqa: F403  (broker fixtures are registered by name)
from tests.helpers.www import *  # noqa: F403  (the loopback HTTP server fixture, by name)

REPO = Path(__file__).resolve().parent.parent


def _dir_from_env(var: str, default: Path) -> Path:
    path = Path(os.environ.get(var, default))
    if not path.is_dir():
        pytest.fail(f"{var}={path} is not a directory: point it at the shared models/media")
    return path


@pytest.fixture(scope="session")
def model_mirror() -> Path:
    """Directory holding the reference model files (the catalog's local mirror)."""
    return _dir_from_env("EDGED_MODEL_MIRROR", REPO.parent / "shared" / "models")


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """Directory holding the sample photos, clips and sounds."""
    return _dir_from_env("EDGED_MEDIA_DIR", REPO.parent / "shared" / "media")


@pytest.fixture(scope="session")
def models_dir(model_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every catalog model pulled (sha256-verified) from the mirror, once per session."""
    dest = tmp_path_factory.mktemp("models")
    catalog = load_catalog()
    for name in catalog.names():
        pull(catalog.get(name), dest, mirror=model_mirror)
    return dest


@pytest.fixture(autouse=True)
def _fresh_logging() -> object:
    """Undo any ``configure_logging`` a test triggered (e.g. through ``edged.__main__.main``).

    Its level filter would otherwise hide info events from later tests'
    ``capture_logs()``, which swaps processors but keeps the wrapper class.
    """
    yield
    structlog.reset_defaults()
    reset_stdlib_logging()
